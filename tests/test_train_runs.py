"""Real training runs on tiny random Llamas, evaluated on held-out conversations: LoRA through
the CLI (W&B offline) and the checkpoint layout infer loads, merge, LoRA checkpoints that hold
only the trained token rows, a killed LoRA run resumed, QLoRA on this CPU merged into the
unquantised base, and a shipped recipe found by name."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import eval_conversation_records, make_tiny_llama, train_conversation_records
from userlm.data_prep.format import END_MARKER
from userlm.data_prep.templates import CHATML

TINY_RUN = {
    "template": "chatml",
    "max_length": 256,
    "per_device_train_batch_size": 4,
    "learning_rate": 0.01,
    "logging_steps": 1,
    "activation_checkpointing": False,
    "report_to": "none",
    "seed": 0,
}


def write_recipe(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump({**TINY_RUN, **values}))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, default_tokenizer) -> Path:
    """A tiny random Llama with SmolLM2's vocabulary, which lacks the end marker (read-only)."""
    return make_tiny_llama(tmp_path_factory.mktemp("base") / "tiny", default_tokenizer)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """Flipped samples shaped like `userlm prep` output, the validation split held out (other conversations)."""
    from userlm.data_prep.format import flip

    folder = tmp_path_factory.mktemp("prep")
    for split, records in (("train", train_conversation_records()), ("validation", eval_conversation_records())):
        rows = [sample for record in records for sample in flip(record, split)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def logits(model, tokenizer) -> torch.Tensor:
    text = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" + END_MARKER
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model(ids).logits.float()


def adapted_unquantised(base: Path, adapter: Path):
    """The float32 base with the adapter applied by PEFT (what a merge must reproduce)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))
    return PeftModel.from_pretrained(model, adapter).eval(), tokenizer


def clear_wandb_env(monkeypatch) -> None:
    """No W&B settings in the environment, and those the run sets are undone after the test."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_SILENT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_lora_run_through_the_cli_writes_what_infer_loads_and_merges(base, samples, tmp_path, monkeypatch, capsys):
    import wandb
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from userlm.cli import main

    # W&B asked for with no credentials: offline, its run folder under output_dir, no prompt.
    clear_wandb_env(monkeypatch)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    out = tmp_path / "lora"
    recipe = write_recipe(tmp_path / "r.yaml", model_name_or_path=str(base), dataset_path=str(samples), output_dir=str(out))

    assert main(["train", str(recipe), "method=lora", "--max_steps", "8", "eval_on_start=true", "report_to=wandb"]) == 0

    assert "userlm train: lora, chatml template" in capsys.readouterr().out
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 8 and summary["added_tokens"] == [END_MARKER]
    assert summary["eval_loss_after"] < summary["eval_loss_before"]  # on held-out conversations
    assert os.environ["WANDB_MODE"] == "offline"
    wandb.finish()  # the trainer leaves its run open until the process ends
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))

    # The checkpoint contract: tokenizer with the flipped template and the end marker, a PEFT adapter.
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == CHATML.jinja
    assert tokenizer.convert_tokens_to_ids(END_MARKER) == len(tokenizer) - 1
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(base)
    assert adapter_config["trainable_token_indices"] == {"embed_tokens": [len(tokenizer) - 1]}

    adapted, tokenizer = adapted_unquantised(base, out)
    expected = logits(adapted, tokenizer)

    assert main(["merge", str(out), "--out", str(tmp_path / "merged32"), "--dtype", "float32"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged32").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, tokenizer), expected, atol=1e-6, rtol=1e-6)
    assert AutoTokenizer.from_pretrained(tmp_path / "merged32").chat_template == CHATML.jinja

    # The default merge is bf16: same logits up to bf16 rounding of the weights; a second merge replaces the first.
    for _ in range(2):
        assert main(["merge", str(out), "--out", str(tmp_path / "merged")]) == 0
    merged16 = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged16.dtype == torch.bfloat16
    torch.testing.assert_close(logits(merged16, tokenizer), expected, atol=0.05, rtol=0.05)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")] == []


def test_wandb_runs_online_only_where_wandb_finds_credentials(tmp_path, monkeypatch):
    import wandb

    from userlm.train.sft import configure_wandb

    wandb.finish()  # no run left open in this process by another test
    clear_wandb_env(monkeypatch)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    configure_wandb(["none"], tmp_path / "off")
    assert "WANDB_DIR" not in os.environ  # not asked for: W&B untouched
    configure_wandb(["wandb"], tmp_path / "run")
    assert "WANDB_MODE" not in os.environ and os.environ["WANDB_DIR"] == str(tmp_path / "run")

    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    configure_wandb(["wandb"], tmp_path / "run")
    assert os.environ["WANDB_MODE"] == "offline"


RESUMED_RUN = {"max_steps": 6, "save_steps": 3, "eval_strategy": "no"}


@pytest.fixture(scope="module")
def uninterrupted_run(base, samples, tmp_path_factory):
    """A factory: uninterrupted_run(method) -> the output folder of a 6-step run with checkpoints at 3
    and 6, and every warning and log line it raised (one run per method per module)."""
    from userlm.train.config import load_recipe
    from userlm.train.sft import train

    runs = {}

    def run(method: str) -> tuple[Path, list[str]]:
        if method not in runs:
            folder = tmp_path_factory.mktemp(f"uninterrupted-{method}")
            recipe = write_recipe(folder / "r.yaml", model_name_or_path=str(base), dataset_path=str(samples),
                                  output_dir=str(folder / "out"), method=method, **RESUMED_RUN)
            messages: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda record: messages.append(record.getMessage())
            logging.getLogger().addHandler(handler)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    train(load_recipe(recipe))
            finally:
                logging.getLogger().removeHandler(handler)
            runs[method] = folder / "out", messages + [str(w.message) for w in caught]
        return runs[method]

    return run


def test_lora_checkpoints_hold_only_the_trained_token_rows(uninterrupted_run, default_tokenizer):
    out, messages = uninterrupted_run("lora")
    vocabulary = len(default_tokenizer) + 1  # the end marker was added
    assert not [m for m in messages if "save_embedding_layers" in m]
    for folder in (out / "checkpoint-3", out / "checkpoint-6", out):
        with safe_open(folder / "adapter_model.safetensors", "pt") as adapter:
            shapes = {key: tuple(adapter.get_slice(key).get_shape()) for key in adapter.keys()}
        assert not [key for key, shape in shapes.items() if vocabulary in shape], f"{folder.name} holds a whole embedding matrix"
        rows = {key: shape for key, shape in shapes.items() if "trainable_tokens" in key}
        assert rows == {"base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta": (1, 64)}
        assert all("lora_" in key for key in shapes.keys() - rows.keys())


def loss_log(folder: Path) -> list[tuple[int, float]]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]


def wait_for_checkpoint(folder: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until `folder` is a complete checkpoint: the trainer writes trainer_state.json last."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            json.loads((folder / "trainer_state.json").read_text())
            return
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"no complete {folder.name} (the run exited with {process.poll()})")


# How close a resumed run ends to the uninterrupted one: two processes on this CPU differ in the
# last float32 bits, which Adam's normalisation amplifies on near-zero gradients, more so for
# full fine-tuning (seen: LoRA weights 0.14% of the update of steps 4-6 apart, full 3.2%; losses
# 1e-5 and 1.5e-4). Wrong resumes measured on the full run: another batch order is 0.05 off in
# loss and 51% in update; a lost optimizer state 0.04 and 421%.
RESUME_TOLERANCE = {"lora": (5e-4, 0.02), "full": (5e-3, 0.10)}
WEIGHTS = {"lora": "adapter_model.safetensors", "full": "model.safetensors"}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_killed_run_resumes_where_an_uninterrupted_one_ends(method, uninterrupted_run, base, samples, tmp_path):
    from userlm.train.config import load_recipe
    from userlm.train.sft import train

    straight, _ = uninterrupted_run(method)
    out = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "r.yaml", model_name_or_path=str(base), dataset_path=str(samples),
                          output_dir=str(out), method=method, resume_from_checkpoint="auto", **RESUMED_RUN)

    # The same recipe in its own process, killed (SIGKILL) once its first checkpoint is complete.
    process = subprocess.Popen([sys.executable, "-m", "userlm.train", str(recipe)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(out / "checkpoint-3", process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "checkpoint-6").exists() and not (out / "train_summary.json").exists()
    first_checkpoint = (out / "checkpoint-3" / WEIGHTS[method]).stat().st_mtime_ns

    summary = train(load_recipe(recipe))

    assert summary["resumed_from"] == str(out / "checkpoint-3") and summary["global_step"] == 6
    # Resumed, not started over: a fresh run would have written checkpoint-3 again.
    assert (out / "checkpoint-3" / WEIGHTS[method]).stat().st_mtime_ns == first_checkpoint
    loss_tolerance, update_share = RESUME_TOLERANCE[method]
    resumed, expected = loss_log(out / "checkpoint-6"), loss_log(straight / "checkpoint-6")
    assert [step for step, _ in resumed] == [step for step, _ in expected] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in expected], abs=loss_tolerance)
    weights, expected_weights = load_file(out / WEIGHTS[method]), load_file(straight / WEIGHTS[method])
    at_3 = load_file(straight / "checkpoint-3" / WEIGHTS[method])
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        update = (tensor - at_3[name]).norm()
        error = (weights[name] - tensor).norm()
        assert error <= update_share * update, f"{name}: resumed weights off by {error / update:.1%} of the update of steps 4-6"


def test_qlora_trains_on_cpu_in_4bit_and_merges_into_the_unquantised_base(base, samples, tmp_path):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from userlm.config import from_dict
    from userlm.train.config import TrainConfig
    from userlm.train.merge import merge_adapter
    from userlm.train.sft import build_trainer

    out = tmp_path / "qlora"
    config = from_dict(TrainConfig, {**TINY_RUN, "model_name_or_path": str(base), "dataset_path": samples,
                                     "output_dir": str(out), "method": "qlora", "max_steps": 8})
    run = build_trainer(config)
    model = run.trainer.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
    before_row = delta.detach().clone()
    before_loss = run.trainer.evaluate()["eval_loss"]

    run.trainer.train()

    assert run.trainer.evaluate()["eval_loss"] < before_loss  # on conversations it never trained on
    conversations = {split: {json.loads(line)["conversation_id"] for line in (samples / f"{split}.jsonl").open()}
                     for split in ("train", "validation")}
    assert conversations["train"].isdisjoint(conversations["validation"])
    assert len(run.trainer.eval_dataset) == len((samples / "validation.jsonl").read_text().splitlines())
    assert not torch.equal(delta.detach(), before_row)

    run.trainer.save_model(str(out))
    merged_dir = merge_adapter(out, tmp_path / "merged", dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    assert not any("lora" in name for name, _ in merged.named_parameters()) and merged.dtype == torch.float32
    adapted, tokenizer = adapted_unquantised(base, out)
    expected = logits(adapted, tokenizer)
    torch.testing.assert_close(logits(merged, tokenizer), expected, atol=1e-5, rtol=1e-5)
    with adapted.disable_adapter():
        assert not torch.allclose(logits(adapted, tokenizer), expected, atol=1e-3)  # the adapter changed the model


def test_shipped_quickstart_recipe_trains_by_name(samples, tmp_path, monkeypatch):
    from userlm.cli import main

    # The shipped recipe on the real SmolLM2 from an empty folder, shortened to one step.
    monkeypatch.chdir(tmp_path)
    words = [f"dataset_path={samples}", "output_dir=run", "max_steps=1", "warmup_steps=0", "max_train_samples=8", "max_eval_samples=4"]
    assert main(["train", "smollm2-cpu-quickstart", *words]) == 0

    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert (summary["method"], summary["global_step"], summary["train_samples"], summary["eval_samples"]) == ("lora", 1, 8, 4)
    assert summary["eval_loss_before"] != summary["eval_loss_after"]
    assert (tmp_path / "run" / "adapter_config.json").is_file()

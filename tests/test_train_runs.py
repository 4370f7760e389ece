"""Real training runs on tiny random Llamas, evaluated on held-out conversations: LoRA through
the CLI (W&B offline) and the checkpoint layout infer loads, merge, LoRA checkpoints that hold
only the trained token rows, a killed LoRA run resumed, QLoRA on this CPU merged into the
unquantised base, and a shipped recipe found by name."""

from __future__ import annotations

import json
import logging
import os
import re
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
from userlm.errors import UserError
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import CHATML
from userlm.train.outputs import unfinished_run_message

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
    from userlm.flipped.format import flip

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
    recipe = write_recipe(
        tmp_path / "r.yaml", model_name_or_path=str(base), dataset_path=str(samples), output_dir=str(out)
    )

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
            recipe = write_recipe(
                folder / "r.yaml",
                model_name_or_path=str(base),
                dataset_path=str(samples),
                output_dir=str(folder / "out"),
                method=method,
                **RESUMED_RUN,
            )
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
        assert not [key for key, shape in shapes.items() if vocabulary in shape], (
            f"{folder.name} holds a whole embedding matrix"
        )
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
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model_name_or_path=str(base),
        dataset_path=str(samples),
        output_dir=str(out),
        method=method,
        resume_from_checkpoint="auto",
        **RESUMED_RUN,
    )

    # The same recipe in its own process, killed (SIGKILL) once its first checkpoint is complete.
    process = subprocess.Popen(
        [sys.executable, "-m", "userlm.train", str(recipe)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_checkpoint(out / "checkpoint-3", process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "checkpoint-6").exists() and not (out / "train_summary.json").exists()
    # The killed run's folder says so, for every reader (infer, eval, serve, merge).
    assert "did not finish" in unfinished_run_message(out)
    first_checkpoint = (out / "checkpoint-3" / WEIGHTS[method]).stat().st_mtime_ns

    summary = train(load_recipe(recipe))
    assert unfinished_run_message(out) is None and (out / "train_summary.json").is_file()

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
        assert error <= update_share * update, (
            f"{name}: resumed weights off by {error / update:.1%} of the update of steps 4-6"
        )


def test_qlora_trains_on_cpu_in_4bit_and_merges_into_the_unquantised_base(base, samples, tmp_path):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from userlm.config import from_dict
    from userlm.train.config import TrainConfig
    from userlm.train.merge import merge_adapter
    from userlm.train.sft import build_trainer

    out = tmp_path / "qlora"
    config = from_dict(
        TrainConfig,
        {
            **TINY_RUN,
            "model_name_or_path": str(base),
            "dataset_path": samples,
            "output_dir": str(out),
            "method": "qlora",
            "max_steps": 8,
        },
    )
    run = build_trainer(config)
    model = run.trainer.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
    before_row = delta.detach().clone()
    before_loss = run.trainer.evaluate()["eval_loss"]

    run.trainer.train()

    assert run.trainer.evaluate()["eval_loss"] < before_loss  # on conversations it never trained on
    conversations = {
        split: {json.loads(line)["conversation_id"] for line in (samples / f"{split}.jsonl").open()}
        for split in ("train", "validation")
    }
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
    words = [
        f"dataset_path={samples}",
        "output_dir=run",
        "max_steps=1",
        "warmup_steps=0",
        "max_train_samples=8",
        "max_eval_samples=4",
    ]
    assert main(["train", "smollm2-cpu-quickstart", *words]) == 0

    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    # The first 8 samples hold 2 end samples, each trained twice by the recipe: 8 + 2 rows.
    assert (summary["method"], summary["global_step"], summary["eval_samples"]) == ("lora", 1, 4)
    assert (summary["end_samples"], summary["end_sample_repeats"], summary["train_samples"]) == (2, 2, 10)
    assert summary["end_marker_init"] == "<|im_end|>" and summary["new_token_learning_rate"] == 5e-3
    assert summary["eval_loss_before"] != summary["eval_loss_after"]
    assert (tmp_path / "run" / "adapter_config.json").is_file()


def tear(checkpoint: Path, how: str) -> None:
    """What a kill while saving leaves: weights cut short before trainer_state.json, or the state file cut short."""
    if how == "weights cut short":
        weights = checkpoint / WEIGHTS["lora"]
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        (checkpoint / "trainer_state.json").unlink()
    else:
        state = checkpoint / "trainer_state.json"
        state.write_text(state.read_text()[:100])


@pytest.mark.parametrize("how", ["weights cut short", "state cut short"])
def test_torn_newest_checkpoint_is_skipped_with_a_warning_and_training_resumes_from_the_one_before(
    how, uninterrupted_run, base, samples, tmp_path, caplog
):
    import shutil

    from transformers.trainer_utils import get_last_checkpoint

    from userlm.train.config import load_recipe
    from userlm.train.sft import train

    straight, _ = uninterrupted_run("lora")
    out = tmp_path / "out"
    for name in ("checkpoint-3", "checkpoint-6"):
        shutil.copytree(straight / name, out / name)
    tear(out / "checkpoint-6", how)
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-6")  # what transformers alone would resume from
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model_name_or_path=str(base),
        dataset_path=str(samples),
        output_dir=str(out),
        method="lora",
        resume_from_checkpoint="auto",
        **RESUMED_RUN,
    )

    with caplog.at_level(logging.WARNING, logger="userlm.train.sft"):
        summary = train(load_recipe(recipe))

    assert summary["resumed_from"] == str(out / "checkpoint-3") and summary["global_step"] == 6
    warnings_ = [r.getMessage() for r in caplog.records if r.name == "userlm.train.sft"]
    assert len(warnings_) == 1 and str(out / "checkpoint-6") in warnings_[0] and "incomplete" in warnings_[0]
    assert json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6  # saved anew


def test_a_model_folder_without_weights_or_an_adapter_as_model_is_one_sentence(
    uninterrupted_run, base, samples, tmp_path
):
    import shutil

    from userlm.config import from_dict
    from userlm.train.config import TrainConfig
    from userlm.train.sft import build_trainer

    no_weights = tmp_path / "no-weights"
    shutil.copytree(base, no_weights)
    (no_weights / "model.safetensors").unlink()
    adapter, _ = uninterrupted_run("lora")
    for model, message in (
        (no_weights, "is not a model folder (config.json and weights"),
        (adapter, "is a LoRA adapter, not a model"),
    ):
        config = from_dict(
            TrainConfig,
            {
                **TINY_RUN,
                "model_name_or_path": str(model),
                "dataset_path": samples,
                "output_dir": str(tmp_path / "out"),
                "max_steps": 1,
            },
        )
        with pytest.raises(UserError, match=re.escape(message)):
            build_trainer(config)
    assert not (tmp_path / "out").exists()


def test_merge_never_writes_over_its_adapter_or_base(uninterrupted_run, base, tmp_path):
    from userlm.train.merge import merge_adapter

    adapter, _ = uninterrupted_run("lora")
    before = {p.name: p.stat().st_mtime_ns for p in adapter.iterdir()}
    for out, message in (
        (adapter, f"--out {adapter} is the adapter"),
        (adapter / "merged", "is inside the adapter"),
        (base, f"--out {base} is the base model"),
    ):
        with pytest.raises(UserError, match=message):
            merge_adapter(adapter, out)
    assert {p.name: p.stat().st_mtime_ns for p in adapter.iterdir()} == before


def test_an_empty_training_split_names_the_prep_filters_that_emptied_it(base, tmp_path):
    from userlm.config import from_dict
    from userlm.data_prep.config import PrepConfig
    from userlm.data_prep.pipeline import prep
    from userlm.train.config import TrainConfig
    from userlm.train.sft import build_trainer

    logs = tmp_path / "logs.jsonl"
    logs.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"hello number {i}, how are you"},
                        {"role": "assistant", "content": "Fine, thanks."},
                    ]
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    # Every user writes 6 words a turn: a persona filter for very long turns keeps nobody.
    prep(
        PrepConfig(
            inputs=[logs],
            out=tmp_path / "prep",
            languages=["any"],
            persona_filter="words_per_turn>=100",
            progress=False,
        )
    )
    config = from_dict(
        TrainConfig,
        {
            **TINY_RUN,
            "model_name_or_path": str(base),
            "dataset_path": tmp_path / "prep",
            "output_dir": str(tmp_path / "out"),
            "max_steps": 1,
        },
    )

    with pytest.raises(UserError) as error:
        build_trainer(config)

    message = str(error.value)
    assert "holds no training samples" in message and "persona_filter filter: 6" in message
    assert str(tmp_path / "prep" / "stats.json") in message and "\n" not in message


def test_a_persona_run_continues_the_general_adapter(uninterrupted_run, base, samples, tmp_path):
    from userlm.config import from_dict
    from userlm.infer.loading import load_model_and_tokenizer
    from userlm.train.config import TrainConfig
    from userlm.train.sft import build_trainer, train

    general, _ = uninterrupted_run("lora")
    saved = load_file(general / WEIGHTS["lora"])
    config = from_dict(
        TrainConfig,
        {
            **TINY_RUN,
            "model_name_or_path": str(base),
            "dataset_path": samples,
            "output_dir": str(tmp_path / "persona"),
            "max_steps": 2,
            "init_adapter": general,
            "eval_strategy": "no",
        },
    )

    run = build_trainer(config)
    state = {name.replace(".default", ""): p for name, p in run.trainer.model.named_parameters()}
    assert run.added_tokens == []  # the adapter's tokenizer has the end marker already
    for name, tensor in saved.items():  # starts where the general run ended, every tensor trainable
        assert torch.equal(state[name].detach(), tensor) and state[name].requires_grad, name

    summary = train(config)

    assert summary["init_adapter"] == str(general) and summary["global_step"] == 2
    persona = load_file(tmp_path / "persona" / WEIGHTS["lora"])
    assert persona.keys() == saved.keys() and all(persona[k].shape == saved[k].shape for k in saved)
    assert any(not torch.equal(persona[k], saved[k]) for k in saved)
    assert json.loads((tmp_path / "persona" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base
    )
    load_model_and_tokenizer(tmp_path / "persona")  # what simulate and eval load

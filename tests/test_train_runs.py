"""Real training runs on tiny random Llamas: LoRA through the CLI (with W&B offline),
the checkpoint layout infer loads, merge, QLoRA on this CPU, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

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


def logits(model, tokenizer) -> torch.Tensor:
    text = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" + END_MARKER
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model(ids).logits.float()


def test_lora_run_writes_what_infer_loads_and_merges(flipped_samples_dir, tiny_llama, tmp_path, monkeypatch, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from userlm.cli import main

    # W&B asked for with no login: offline, its run folder under output_dir, no prompt.
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    base = tiny_llama()
    out = tmp_path / "lora"
    recipe = write_recipe(tmp_path / "r.yaml", model_name_or_path=str(base), dataset_path=str(flipped_samples_dir), output_dir=str(out))

    assert main(["train", str(recipe), "method=lora", "max_steps=8", "eval_on_start=true", "report_to=wandb"]) == 0

    printed = capsys.readouterr().out
    assert "Held-out user-turn loss" in printed and f"Wrote {out}" in printed
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert os.environ["WANDB_MODE"] == "offline"
    assert list((out / "wandb").glob("offline-run-*"))

    # The checkpoint contract: tokenizer with the flipped template and the end marker, a PEFT adapter.
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == CHATML.jinja
    assert tokenizer.convert_tokens_to_ids(END_MARKER) == len(tokenizer) - 1
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(base)
    assert adapter_config["trainable_token_indices"] == {"embed_tokens": [len(tokenizer) - 1]}
    # Only the new rows are saved, not whole embedding matrices.
    assert (out / "adapter_model.safetensors").stat().st_size < 1_000_000

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))
    adapted = PeftModel.from_pretrained(model, out).eval()
    expected = logits(adapted, tokenizer)

    assert main(["merge", str(out), "--out", str(tmp_path / "merged32"), "--dtype", "float32"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged32").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, tokenizer), expected, atol=1e-6, rtol=1e-6)
    assert AutoTokenizer.from_pretrained(tmp_path / "merged32").chat_template == CHATML.jinja

    # The default merge is bf16: same logits up to bf16 rounding of the weights.
    assert main(["merge", str(out), "--out", str(tmp_path / "merged")]) == 0
    merged16 = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged16.dtype == torch.bfloat16
    torch.testing.assert_close(logits(merged16, tokenizer), expected, atol=0.05, rtol=0.05)


def test_qlora_trains_on_cpu_in_4bit_and_trains_the_end_marker_row(flipped_samples_dir, tiny_llama, tmp_path):
    import bitsandbytes as bnb

    from userlm.train.config import recipe_from_dict
    from userlm.train.sft import build_trainer

    values = {**TINY_RUN, "model_name_or_path": str(tiny_llama()), "dataset_path": str(flipped_samples_dir)}
    run = build_trainer(recipe_from_dict({**values, "output_dir": str(tmp_path / "q"), "method": "qlora", "max_steps": 8}))
    model = run.trainer.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
    before_row = delta.detach().clone()
    before_loss = run.trainer.evaluate()["eval_loss"]

    run.trainer.train()

    assert run.trainer.evaluate()["eval_loss"] < before_loss
    assert not torch.equal(delta.detach(), before_row)


def checkpoint_state(folder: Path) -> tuple[float, dict]:
    from safetensors.torch import load_file

    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return [e["loss"] for e in history if "loss" in e][-1], load_file(folder / "model.safetensors")


def test_killed_run_resumes_to_the_same_loss_and_weights(flipped_samples_dir, tiny_llama, tmp_path):
    from userlm.train.config import load_recipe
    from userlm.train.sft import train

    base = tiny_llama()
    run = {"model_name_or_path": str(base), "dataset_path": str(flipped_samples_dir), "method": "full", "max_steps": 6, "save_steps": 3}
    straight = write_recipe(tmp_path / "straight.yaml", **run, output_dir=str(tmp_path / "straight"))
    killed = write_recipe(tmp_path / "killed.yaml", **run, output_dir=str(tmp_path / "killed"), resume_from_checkpoint="auto")

    train(load_recipe(straight))

    # The same recipe in its own process, killed (SIGKILL) once its first checkpoint is complete.
    process = subprocess.Popen([sys.executable, "-m", "userlm.train", str(killed)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "checkpoint-3"
    deadline = time.monotonic() + 300
    while not (first / "trainer_state.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # let rank 0 finish writing the checkpoint folder
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert first.is_dir() and not (tmp_path / "killed" / "checkpoint-6").exists()

    summary = train(load_recipe(killed))

    assert summary["resumed_from"] == str(first)
    loss_straight, weights_straight = checkpoint_state(tmp_path / "straight" / "checkpoint-6")
    loss_resumed, weights_resumed = checkpoint_state(tmp_path / "killed" / "checkpoint-6")
    # Tolerance. Two processes on this CPU differ in the last float32 bits from the second step
    # on, and Adam's normalisation amplifies that on near-zero gradients (seen: loss 1.5e-4 apart,
    # weight updates up to 3.2% apart). So: final loss within 5e-3, and for every tensor the
    # resumed run's weights within 10% of the uninterrupted run's update over steps 4-6. Measured
    # wrong resumes: another batch order is 0.05 off in loss and 51% in update; a lost optimizer
    # state 0.04 and 421%.
    assert loss_resumed == pytest.approx(loss_straight, abs=5e-3)
    _, weights_at_3 = checkpoint_state(tmp_path / "straight" / "checkpoint-3")
    assert weights_resumed.keys() == weights_straight.keys()
    for name in weights_straight:
        update = (weights_straight[name] - weights_at_3[name]).norm()
        error = (weights_resumed[name] - weights_straight[name]).norm()
        assert error <= 0.10 * update, f"{name}: resumed weights off by {error / update:.1%} of the update"


def test_quickstart_train_reports_held_out_loss_before_and_after(flipped_samples_dir, tmp_path, capsys):
    from userlm.train.quickstart import quickstart_train

    # The shipped quickstart recipe on the real SmolLM2, shortened to two steps for the test.
    summary = quickstart_train(flipped_samples_dir, tmp_path / "qs", overrides=["max_steps=2", "learning_rate=1e-3"])

    assert summary["global_step"] == 2
    assert summary["eval_loss_before"] > 0 and summary["eval_loss_after"] > 0
    assert summary["eval_loss_before"] != summary["eval_loss_after"]
    assert "Held-out user-turn loss of the SmolLM2 simulator" in capsys.readouterr().out
    assert (tmp_path / "qs" / "adapter_config.json").is_file()

"""A real two-rank DeepSpeed ZeRO-3 run on the CPU
(docs/design.md#real-components), through the `deepspeed` launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_rank_zero3_run_completes_loss_falls_and_checkpoint_loads(flipped_samples_dir, tiny_llama, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_llama()
    out = tmp_path / "zero3"
    recipe = tmp_path / "zero3.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(base),
                "dataset_path": str(flipped_samples_dir),
                "template": "chatml",
                "output_dir": str(out),
                "method": "full",
                "deepspeed": str(REPO / "recipes" / "deepspeed" / "zero3.json"),
                "max_length": 256,
                "per_device_train_batch_size": 2,
                "max_steps": 6,
                "learning_rate": 1e-3,
                "logging_steps": 1,
                "save_steps": 100,
                "activation_checkpointing": False,
                "report_to": "none",
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = Path(sys.executable).parent / "deepspeed"
    result = subprocess.run(
        [str(launcher), "--num_gpus", "2", "--master_port", str(free_port()), "--module", "userlm.train", str(recipe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 6 and losses[-1] < losses[0]
    # Both ranks fed the trainer: 2 ranks x 2 samples per step over 11 samples is 3 steps an epoch.
    assert state["epoch"] == pytest.approx(2.0)

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    trained, initial = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert trained[name].shape == initial[name].shape and not (trained[name] == initial[name]).all()

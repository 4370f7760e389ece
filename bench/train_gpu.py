"""GPU training benchmark: `userlm train` LoRA, QLoRA and full fine-tuning of a Llama-3.1-8B-shaped model.

No weights can be fetched, so the model is built from Llama-3.1-8B's config with random
weights (throughput and memory do not depend on the values) and saved once to --work.
Its tokenizer is SmolLM2's plus Llama-3's chat special tokens (the embedding keeps
Llama-3's 128,256 rows). Data: a `userlm prep` output folder.

Every run has the quickstart's end-marker options on (the added <|endconversation|> starts
from the EOS rows, its rows train at ten times the learning rate under LoRA, each end sample
is seen twice), so their cost at 8B size is in the figures.

Figures per run: seconds per step, tokens/s per GPU (all non-padding tokens the model processed), trained
(user-turn) tokens/s, MFU (6 x parameters x tokens/s over the GPU's dense bf16 peak; LoRA
counts the frozen base too, as torchtune does) and peak GPU memory. Reference: torchtune's
published Llama-3.1-8B LoRA figure, 4,699 tokens/s on one A6000.

    python bench/train_gpu.py --data out/quickstart/prep --work out/bench-gpu
    python bench/train_gpu.py --data out/quickstart/prep --work out/bench-gpu --tiny   # CPU smoke run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from userlm.config import Config, parse_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# Dense bf16 peak FLOP/s by device name (without sparsity).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A6000": 155e12}
LLAMA31_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TINY = dict(
    LLAMA31_8B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def build_model(folder: Path, shape: dict) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from userlm.defaults import default_model_dir

    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    tokenizer.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    config = LlamaConfig(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
    )
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class CountingCollator:
    def __init__(self, collator):
        self.collator, self.tokens, self.trained = collator, 0, 0

    def __call__(self, examples):
        batch = self.collator(examples)
        mask = batch.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        self.trained += int((batch["labels"] != -100).sum())
        return batch


def run(name: str, values: dict) -> dict:
    import torch

    from userlm.config import from_dict
    from userlm.train.config import TrainConfig
    from userlm.train.sft import build_trainer

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = build_trainer(from_dict(TrainConfig, values)).trainer
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters())  # ZeRO-3 partitions
    tokens_per_s = counter.tokens / seconds
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in device), None)
    result = {
        "run": name,
        "device": device,
        "steps": trainer.state.global_step,
        "seconds_per_step": round(seconds / max(1, trainer.state.global_step), 3),
        "tokens_per_s_per_gpu": round(tokens_per_s, 1),
        "trained_tokens_per_s": round(counter.trained / seconds, 1),
        "mfu": round(6 * parameters * tokens_per_s / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "parameters": parameters,
    }
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print(json.dumps(result))
    return result


@dataclass(kw_only=True)
class BenchConfig(Config):
    data: Path = field(metadata={"help": "`userlm prep` output folder"})
    work: Path = field(default=Path("out/bench-gpu"), metadata={"help": "where the model, the runs and the figures go"})
    steps: int = field(default=30, metadata={"min": 1, "help": "timed training steps per run"})
    tiny: bool = field(default=False, metadata={"help": "a 2-layer model of the same vocabulary, for a CPU smoke run"})
    runs: list[Literal["lora", "qlora", "full"]] = field(
        default_factory=lambda: ["lora", "qlora", "full"],
        metadata={"nonempty": True, "help": "lora, qlora, full, or several (each in its own process)"},
    )


def main() -> None:
    args = parse_config(
        BenchConfig, sys.argv[1:], prog="python bench/train_gpu.py", description=__doc__.split("\n\n")[0]
    )
    runs = args.runs
    if len(runs) > 1:
        # One process per run: DeepSpeed's process group cannot follow a plain run in one process.
        for name in runs:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--runs", name], check=True)
        return

    import torch

    from userlm.atomic import write_json

    model = build_model(
        args.work / ("tiny-llama31" if args.tiny else "llama31-8b-random"), TINY if args.tiny else LLAMA31_8B
    )
    gpu = torch.cuda.is_available()
    common = {
        "model_name_or_path": str(model),
        "dataset_path": str(args.data),
        "template": "userlm-llama3",
        "dtype": "bfloat16" if gpu else "float32",
        "max_length": 2048,
        "long_samples": "skip",
        "max_train_samples": 64 * args.steps,
        "max_eval_samples": 16,
        "per_device_train_batch_size": 4,
        "max_steps": args.steps,
        "learning_rate": 1e-4,
        "bf16": gpu,
        "activation_checkpointing": True,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": "none",
        "trainable_tokens": ["<|eot_id|>"],
        "end_marker_init": "eos",
        "end_sample_repeats": 2,
    }
    lora = {"new_token_learning_rate": 1e-3}  # ten times learning_rate, as in the quickstart recipe
    if runs == ["lora"]:
        result = run("lora r16 all-linear", {**common, **lora, "method": "lora", "output_dir": str(args.work / "lora")})
    elif runs == ["qlora"]:
        result = run(
            "qlora r16 all-linear, 4-bit nf4 base",
            {**common, **lora, "method": "qlora", "output_dir": str(args.work / "qlora")},
        )
    else:
        # One process of DeepSpeed: the Trainer reads its rank and rendezvous from the environment.
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29631")
        config = REPO / "recipes" / "deepspeed" / ("zero3_offload.json" if gpu else "zero3.json")
        result = run(
            f"full, {config.stem}",
            {**common, "method": "full", "deepspeed": str(config), "output_dir": str(args.work / "full")},
        )
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"train_gpu_bench_{runs[0]}.json"
    write_json(path, result)
    print(f"Wrote {path}.")


if __name__ == "__main__":
    main()

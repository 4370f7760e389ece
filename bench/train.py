"""Training throughput: `userlm train` on the CPU quickstart recipe against plain TRL.

Both runs train the same LoRA (the recipe's) on the same model (the embedded SmolLM2)
and the same flipped samples (the recipe's train subset), for the same number of
steps at the same batch size, in this one process. Two baselines, both `SFTTrainer` on the
conversational prompt/completion rendered with the model's own chat template:
- "TRL defaults": pads to the longest sample in a random batch, truncates at 1024 tokens,
  checkpoints activations, float32 (TRL's defaults on a CPU);
- "TRL as advised": what TRL's docs advise for speed on the same data: packing (bfd, which
  TRL makes padding-free), no activation checkpointing (the memory is there), the recipe's
  maximum length and the run's precision (bf16 where the machine has it). Without flash
  attention packed samples attend to each other, so it computes less than it should: a
  ceiling for plain TRL, not an equal.

Figures: trained (user-turn, label != -100) tokens per second of training time, and the
padding share (pad positions / all positions), over one whole epoch of the batches each
trainer builds from the same samples.

    python bench/train.py --data out/quickstart/prep [--steps 6]
    python bench/train.py data=out/quickstart/prep steps=6       # the same keys as key=value words
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config, parse_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPE = "smollm2-cpu-quickstart"  # the shipped recipe, found by name


class CountingCollator:
    """Wraps the trainer's collator to record positions, padding and trained tokens of each batch."""

    def __init__(self, collator):
        self.collator = collator
        self.batches = []

    def __call__(self, examples):
        batch = self.collator(examples)
        padding = int((batch["attention_mask"] == 0).sum()) if "attention_mask" in batch else 0
        self.batches.append((batch["input_ids"].numel(), padding, int((batch["labels"] != -100).sum())))
        return batch

    def totals(self, first: int | None = None) -> tuple[int, int, int]:
        """Sums over the first `first` batches: the data loader builds one more than it trains on."""
        positions, padding, trained = zip(*self.batches[:first])
        return sum(positions), sum(padding), sum(trained)


def measure(trainer) -> dict:
    # Padding over one whole epoch of the batches the trainer would build (no compute needed),
    # then throughput over the timed training steps.
    epoch = CountingCollator(trainer.data_collator)
    trainer.data_collator = epoch
    for _ in trainer.get_train_dataloader():
        pass
    counter = CountingCollator(epoch.collator)
    trainer.data_collator = counter
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    positions, padding, trained = counter.totals(trainer.state.global_step * trainer.args.gradient_accumulation_steps)
    epoch_positions, epoch_padding, epoch_trained = epoch.totals()
    return {
        "seconds": round(seconds, 1),
        "trained_tokens": trained,
        "positions": positions,
        "trained_tokens_per_s": round(trained / seconds, 2),
        "positions_per_s": round(positions / seconds, 2),
        "padding_share_timed_steps": round(padding / positions, 4),
        "padding_share": round(epoch_padding / epoch_positions, 4),
        "epoch_positions": epoch_positions,
        "epoch_trained_tokens": epoch_trained,
        "epoch_trained_per_position": round(epoch_trained / epoch_positions, 4),
    }


def userlm_run(data: Path, out: Path, steps: int) -> dict:
    from userlm.train.config import load_recipe
    from userlm.train.sft import build_trainer

    overrides = [
        f"dataset_path={data}",
        f"output_dir={out / 'userlm'}",
        f"max_steps={steps}",
        "eval_on_start=false",
        "save_strategy=no",
        "resume_from_checkpoint=null",
        "eval_strategy=no",
    ]
    return measure(build_trainer(load_recipe(RECIPE, overrides)).trainer)


def baseline_run(data: Path, out: Path, steps: int, *, advised: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from userlm.flipped.samples import load_samples
    from userlm.hardware import resolve_bf16
    from userlm.train.config import load_recipe
    from userlm.train.sft import lora_config, model_folder

    recipe = load_recipe(RECIPE, [f"dataset_path={data}"])
    train = load_samples(data)["train"]
    train = train.select(range(min(recipe.max_train_samples, len(train)))).select_columns(["prompt", "completion"])
    advice = (
        {
            "packing": True,
            "packing_strategy": "bfd",
            "gradient_checkpointing": False,
            "use_cpu": True,
            "max_length": recipe.sft["max_length"],
            "bf16": resolve_bf16(recipe.sft["bf16"]).bf16,
        }
        if advised
        else {}
    )
    args = SFTConfig(
        output_dir=str(out / ("advised" if advised else "baseline")),
        per_device_train_batch_size=recipe.sft["per_device_train_batch_size"],
        max_steps=steps,
        learning_rate=recipe.sft["learning_rate"],
        save_strategy="no",
        report_to="none",
        seed=recipe.sft["seed"],
        **{"bf16": False, **advice},
    )
    model = AutoModelForCausalLM.from_pretrained(model_folder(recipe.model_name_or_path), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_folder(recipe.model_name_or_path))
    peft = lora_config(recipe, model, tokenizer, added_tokens=[])  # the recipe's LoRA, no new token rows
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, peft_config=peft)
    return measure(trainer)


@dataclass(kw_only=True)
class BenchConfig(Config):
    data: Path = field(metadata={"help": "`userlm prep` output folder"})
    out: Path = field(default=Path("out/bench-train"), metadata={"help": "where train_bench.json and the runs go"})
    steps: int = field(default=6, metadata={"min": 1, "help": "timed training steps per run"})


def main() -> None:
    args = parse_config(BenchConfig, sys.argv[1:], prog="python bench/train.py", description=__doc__.split("\n\n")[0])
    import torch

    from userlm.atomic import write_json

    results = {
        "userlm train": userlm_run(args.data, args.out, args.steps),
        "TRL defaults": baseline_run(args.data, args.out, args.steps, advised=False),
        "TRL as advised": baseline_run(args.data, args.out, args.steps, advised=True),
    }
    ours = results["userlm train"]
    print(f"\n{'run':<15} {'trained tok/s':>14} {'padding':>8} {'trained tok':>12} {'positions':>10} {'seconds':>8}")
    for name, r in results.items():
        print(
            f"{name:<15} {r['trained_tokens_per_s']:>14.2f} {r['padding_share']:>8.1%} "
            f"{r['trained_tokens']:>12} {r['positions']:>10} {r['seconds']:>8.1f}"
        )
    ratios = {
        name: round(ours["trained_tokens_per_s"] / r["trained_tokens_per_s"], 3)
        for name, r in results.items()
        if r is not ours
    }
    for name, ratio in ratios.items():
        print(f"throughput ratio (userlm / {name}): {ratio:.2f}x")
    print(
        f"padding share {ours['padding_share']:.1%} (target < 15%); trained "
        "tokens per processed position over an epoch: "
        + ", ".join(f"{name} {r['epoch_trained_per_position']:.3f}" for name, r in results.items())
    )
    report = {
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "results": results,
        "ratios": ratios,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "train_bench.json", report)
    print(f"Wrote {args.out / 'train_bench.json'}.")


if __name__ == "__main__":
    main()

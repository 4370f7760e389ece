"""One training step of a recipe on the CPU, taken apart: TRL's fused LM head projecting every
position (TRL's own behaviour off Triton devices) against only the labelled ones (what
`userlm train` does on an eager CPU run, train/trainer.py), with LoRA dropout at 0.05 and 0.

For each dropout the recipe's trainer is built once; the same micro-batches (the first
`batches` of its shuffled train loader, after one untimed warm-up) then go through a forward
and backward pass under the recipe's bf16 autocast, each head in turn, no optimizer step.
Figures: seconds per micro-batch; ratios against TRL's head with dropout 0.05 (the recipe
before), in this one run.

    python bench/train_step.py data=out/quickstart/prep
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


@dataclass(kw_only=True)
class StepBenchConfig(Config):
    data: Path = field(metadata={"help": "a `userlm prep` output folder"})
    recipe: str = field(default="smollm2-cpu-quickstart", metadata={"help": "a shipped recipe's name or a YAML path"})
    batches: int = field(default=8, metadata={"min": 1, "help": "timed micro-batches per head and dropout"})


def seconds_per_batch(config: StepBenchConfig, dropout: float) -> dict[str, float]:
    import torch
    from trl import SFTTrainer

    from userlm.train.config import load_recipe
    from userlm.train.sft import build_trainer

    recipe = load_recipe(
        config.recipe,
        [f"dataset_path={config.data}", "output_dir=out/bench-train-step", f"lora_dropout={dropout}", "use_cpu=true"],
    )
    trainer = build_trainer(recipe).trainer
    model = trainer.model
    model.train()
    loader = iter(trainer.get_train_dataloader())
    batches = [next(loader) for _ in range(config.batches + 1)]
    heads = {"every position (TRL)": SFTTrainer.compute_loss, "labelled positions only": type(trainer).compute_loss}
    totals = dict.fromkeys(heads, 0.0)
    autocast = torch.autocast(
        "cpu", dtype=torch.bfloat16, enabled=trainer.args.bf16
    )  # the recipe's bf16, as the machine resolved it
    for i, batch in enumerate(batches):
        for name, compute_loss in heads.items():
            started = time.perf_counter()
            with autocast:
                loss = compute_loss(trainer, model, dict(batch))
            loss.backward()
            model.zero_grad()
            if i:  # the first batch warms up
                totals[name] += time.perf_counter() - started
        print(f"  dropout {dropout}: micro-batch {i}/{config.batches}", flush=True)
    return {name: total / config.batches for name, total in totals.items()}


def main() -> None:
    config = parse_config(
        StepBenchConfig, sys.argv[1:], prog="python bench/train_step.py", description=__doc__.split("\n\n")[0]
    )
    import torch

    rows = {dropout: seconds_per_batch(config, dropout) for dropout in (0.05, 0.0)}
    baseline = rows[0.05]["every position (TRL)"]
    print(f"\n{config.recipe}, {torch.get_num_threads()} threads, seconds per micro-batch (forward + backward):")
    print("| LoRA dropout | LM head | seconds | speed-up |\n|---:|---|---:|---:|")
    for dropout, heads in rows.items():
        for head, seconds in heads.items():
            print(f"| {dropout} | {head} | {seconds:.2f} | {baseline / seconds:.2f}x |")


if __name__ == "__main__":
    main()

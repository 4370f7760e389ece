"""`userlm train RECIPE [key=value ...]` and `userlm merge ADAPTER --out DIR`."""

from __future__ import annotations

import argparse
import os


def add_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="fine-tune a user simulator from a YAML recipe",
        description="Fine-tune a user simulator with TRL's SFTTrainer. Keys are TRL SFTConfig fields plus "
        "model_name_or_path, dataset_path, template, method (full|lora|qlora), lora_*, trainable_tokens, "
        "max_train_samples, max_eval_samples, long_samples, dtype, attn_implementation.",
    )
    train.add_argument("recipe", help="a YAML recipe, e.g. recipes/smollm2-cpu-quickstart.yaml")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="recipe keys to override, values read as YAML")
    # The `deepspeed` launcher passes --local_rank to every rank; the rank comes from the environment anyway.
    train.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    train.set_defaults(run=run_train)

    merge = subparsers.add_parser(
        "merge",
        help="merge a LoRA/QLoRA adapter into its base model",
        description="Merge a LoRA or QLoRA adapter into an unquantised base and write a checkpoint that loads without PEFT.",
    )
    merge.add_argument("adapter", help="an adapter folder written by `userlm train` (method lora or qlora)")
    merge.add_argument("--out", required=True, help="folder to write the merged model and tokenizer to")
    merge.add_argument("--base", default=None, help="base model folder (default: the adapter's base_model_name_or_path)")
    merge.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="dtype of the merged weights")
    merge.set_defaults(run=run_merge)


def run_train(args) -> int:
    from .config import load_recipe
    from .sft import train

    summary = train(load_recipe(args.recipe, args.overrides))
    if os.environ.get("RANK", "0") == "0":
        print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    before, after = summary["eval_loss_before"], summary["eval_loss_after"]
    lines = [
        f"Trained {summary['method']} for {summary['global_step']} steps on {summary['train_samples']} samples "
        f"(train loss {summary['train_loss']:.4f}).",
    ]
    if after is not None:
        start = f"{before:.4f} -> " if before is not None else ""
        lines.append(f"Held-out user-turn loss: {start}{after:.4f} on {summary['eval_samples']} samples.")
    if summary["skipped_samples"]:
        lines.append(f"Skipped {summary['skipped_samples']} samples longer than max_length (listed in skipped_samples.jsonl).")
    lines.append(f"Wrote {summary['output_dir']}.")
    print("\n".join(lines))


def run_merge(args) -> int:
    from .merge import merge_adapter

    out = merge_adapter(args.adapter, args.out, base=args.base, dtype=args.dtype)
    print(f"Merged {args.adapter} into its base; wrote {out}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m userlm.train RECIPE ...`: the entry point for `deepspeed --module` and `accelerate launch -m`."""
    import sys

    from userlm.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m userlm.train")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.run(args)
    except UserError as error:
        print(f"userlm train: {error}", file=sys.stderr)
        return 2

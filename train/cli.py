"""`userlm train RECIPE [key=value ...] [--key value ...]` and `userlm merge ADAPTER --out DIR`."""

from __future__ import annotations

import os

from userlm.config import parse_config
from userlm.summary import print_summary


def train_main(words: list[str]) -> int:
    """Also `python -m userlm.train`, which `deepspeed --module` and `accelerate launch -m` start on every rank."""
    from .config import parse_train_words
    from .sft import train, train_summary

    summary = train(parse_train_words(words))
    if os.environ.get("RANK", "0") == "0":
        print_summary(train_summary(summary))
    return 0


def merge_main(words: list[str]) -> int:
    from .config import MergeConfig
    from .merge import merge_adapter

    config = parse_config(
        MergeConfig,
        words,
        prog="userlm merge",
        description="Merge a LoRA or QLoRA adapter into its unquantised base; the result loads without PEFT.",
    )
    out = merge_adapter(config.adapter, config.out, base=config.base, dtype=config.dtype)
    print(f"Merged {config.adapter} into its base; wrote {out}.")
    return 0

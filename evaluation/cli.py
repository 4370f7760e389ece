"""`userlm eval [CONFIG.yaml] [key=value ...] [--key value ...]`: a thin shell over `evaluate`."""

from __future__ import annotations

from userlm.config import parse_config

from .config import EvalConfig


def main(words: list[str]) -> int:
    config = parse_config(
        EvalConfig, words, prog="userlm eval",
        description="Evaluate simulator checkpoints side by side on a held-out flipped test set with the paper's metrics; "
        "writes metrics.json, report.md and report.html into OUT.",
    )
    from .evaluate import evaluate  # after parsing: `--help` and a bad key need no torch

    evaluate(config)
    return 0

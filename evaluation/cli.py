"""`userlm eval [CONFIG.yaml] [key=value ...] [--key value ...]`: a thin shell over `evaluate`;
`userlm eval table PATH/metrics.json` prints the report's comparison table as Markdown."""

from __future__ import annotations

from userlm.config import parse_config, shipped_finder

from .config import EvalConfig

find_eval_config = shipped_finder("eval config", "eval-paper-gpu")


def main(words: list[str]) -> int:
    if words[:1] == ["table"]:
        from .table import TableConfig, table_markdown

        table = parse_config(
            TableConfig,
            words[1:],
            prog="userlm eval table",
            description="Print the comparison table of a `userlm eval` metrics.json as Markdown.",
        )
        print(table_markdown(table.metrics), end="")
        return 0
    config = parse_config(
        EvalConfig,
        words,
        find_config=find_eval_config,
        prog="userlm eval",
        description="Evaluate simulator checkpoints side by side on a held-out "
        "flipped test set with the paper's metrics; "
        "writes metrics.json, report.md and report.html into OUT.",
    )
    from .evaluate import evaluate  # after parsing: `--help` and a bad key need no torch

    evaluate(config)
    return 0

"""`userlm eval [CONFIG.yaml] [key=value ...] [--key value ...]`: a thin shell over `evaluate`;
`userlm eval table PATH/metrics.json` prints the report's comparison table as Markdown."""

from __future__ import annotations

from userlm.config import parse_config

from .config import EvalConfig


def find_eval_config(word: str):
    """A word that is not a file names a shipped eval config (`eval-paper-gpu`)."""
    from userlm.config import shipped_config
    from userlm.errors import UserError

    found = shipped_config(word)
    if found is None:
        raise UserError(f"No eval config {word}: it is not a file, nor a shipped one such as eval-paper-gpu.")
    return found


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

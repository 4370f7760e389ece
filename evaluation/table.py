"""The report's comparison table as Markdown, generated from a metrics.json (`userlm eval table
PATH/metrics.json`): one row per metric; a column per checkpoint, then each checkpoint minus
the prompted base, each compared pair of checkpoints (differences.py), the human reference and
UserLM-8b as published. Every measured cell carries its 95% interval and n; a difference whose interval
covers zero says "not shown". The README's quickstart table is this output, not typed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config
from userlm.errors import UserError

from .report import METRICS, format_difference, format_figure, markdown_table
from .report_details import Table


def comparison_table(results: dict) -> Table:
    names = list(results["checkpoints"])
    differences = results.get("differences") or {"base": None, "checkpoints": {}}
    compared = list(differences["checkpoints"])
    between = differences.get("between", [])
    headers = [
        "metric",
        *names,
        *(f"{name} − {differences['base']}" for name in compared),
        *(f"{pair['minuend']} − {pair['subtrahend']}" for pair in between),
        "human (measured)",
        "UserLM-8b (published)",
    ]
    rows = []
    for key, _, short, _, better in METRICS:
        measured = [results["checkpoints"][n].get(key) for n in names]
        human = results["human"].get(key)
        if all(entry is None for entry in [*measured, human]):
            continue  # not measured in this run
        published = results["published"]["figures"].get(key, {}).get("UserLM-8b")
        rows.append(
            [
                f"{short} ({better} is better){uninformative_note(results, key)}",
                *(format_figure(entry) for entry in measured),
                *(format_difference(differences["checkpoints"][n].get(key)) for n in compared),
                *(format_difference(pair["figures"].get(key)) for pair in between),
                format_figure(human) + (" (train split)" if (human or {}).get("split") == "train" else ""),
                "" if published is None else f"{published:.2f}",
            ]
        )
    return Table(headers, rows)


def uninformative_note(results: dict, key: str) -> str:
    """The naturalness row says so when its detector cannot tell real users from models writing as users."""
    check = results.get("validation", {}).get("naturalness_detector", {}).get("model_written") or {}
    if key != "naturalness" or check.get("informative", True):
        return ""
    return f": uninformative, the detector tells real from model-written users at AUC {format_figure(check)}"


def floor_table(results: dict) -> Table | None:
    """Each termination figure beside the no-model floors learnt from the train split, and each checkpoint's
    difference from them: a model that only counts turns or words scores the floor."""
    floors = results.get("reference") or {}
    names = list(results["checkpoints"])
    rows = []
    for key, _, short, _, better in METRICS:
        for floor, figure in (floors.get(key) or {}).items():
            differences = [(results["checkpoints"][n].get(key) or {}).get("minus_reference", {}) for n in names]
            rows.append(
                [
                    f"{short} ({better} is better)",
                    f"{figure.get('source', floor)}: {format_figure(figure)}",
                    *(format_difference(d.get(floor)) for d in differences),
                ]
            )
    if not rows:
        return None
    return Table(["metric", "no-model floor", *(f"{name} − floor" for name in names)], rows)


@dataclass(kw_only=True)
class TableConfig(Config):
    metrics: Path = field(metadata={"positional": True, "help": "a metrics.json written by `userlm eval`"})

    def validate(self) -> None:
        if not Path(self.metrics).is_file():
            raise UserError(
                f"No metrics file at {self.metrics}; give the metrics.json of a `userlm eval` output folder."
            )


def table_markdown(path: Path) -> str:
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path} is not JSON; give the metrics.json of a `userlm eval` output folder.") from None
    lines = markdown_table(comparison_table(results))
    floors = floor_table(results)
    if floors is not None:
        lines += ["", *markdown_table(floors)]
    return "\n".join(lines) + "\n"

"""`--compare PREVIOUS_RUN`: what got better or worse per intent since an earlier suite run.

The earlier run is read from its results.json, which a run writes last: a folder without
it is a run that did not finish, and is refused. Intents are matched by name, then by
their text. The success rate, the share the user ended and the share of assistant errors
have a direction; the mean user turns is shown but is neither better nor worse.
"""

from __future__ import annotations

import json
from pathlib import Path

from userlm.errors import UserError

RESULTS = "results.json"
KIND = "userlm test"
# figure -> (words, +1 when higher is better, -1 when lower is better, 0 when neither)
FIGURES = {
    "success_rate": ("success rate", 1),
    "user_ended_rate": ("share the user ended", 1),
    "assistant_error_rate": ("share of assistant errors", -1),
    "mean_user_turns": ("mean user turns", 0),
}
TOLERANCE = 1e-9


def read_previous(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"The run to compare with, {folder}, is not a folder; pass the "
            "output folder of an earlier `userlm test` run."
        )
    path = folder / RESULTS
    if not path.is_file():
        raise UserError(
            f"{folder} holds no finished `userlm test` run (no {RESULTS}); "
            "compare with the folder of a run that finished."
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        results = None
    if not isinstance(results, dict) or results.get("kind") != KIND:
        raise UserError(f"{path} is not the results of a `userlm test` run; compare with the output folder of one.")
    return {**results, "folder": str(folder)}


def compare(previous: dict, intents: list[dict]) -> dict:
    """Per intent of this run (and per intent only the earlier run had): each
    figure before and after, and the verdict."""
    before_by_name = {i["name"]: i for i in previous["intents"]}
    before_by_text = {i["intent"]: i for i in previous["intents"]}
    rows, matched = [], set()
    for intent in intents:
        before = before_by_name.get(intent["name"]) or before_by_text.get(intent["intent"])
        if before is None:
            rows.append(
                {
                    "name": intent["name"],
                    "change": "new",
                    "figures": [],
                    "gate_before": None,
                    "gate_after": intent["passed"],
                }
            )
            continue
        matched.add(before["name"])
        figures = [figure_change(key, before["stats"][key], intent["stats"][key]) for key in FIGURES]
        rows.append(
            {
                "name": intent["name"],
                "change": overall(figures),
                "figures": figures,
                "gate_before": before["passed"],
                "gate_after": intent["passed"],
            }
        )
    for name, before in before_by_name.items():
        if name not in matched:
            rows.append(
                {"name": name, "change": "gone", "figures": [], "gate_before": before["passed"], "gate_after": None}
            )
    return {
        "previous": previous["folder"],
        "previous_finished": previous.get("finished"),
        "signal_before": previous["signal"]["text"],
        "intents": rows,
    }


def figure_change(key: str, before: float | None, after: float | None) -> dict:
    words, direction = FIGURES[key]
    if before is None or after is None:
        change = "n/a"
    elif abs(after - before) <= TOLERANCE:
        change = "same"
    elif direction == 0:
        change = "changed"
    else:
        change = "better" if (after - before) * direction > 0 else "worse"
    return {"figure": key, "words": words, "before": before, "after": after, "change": change}


def overall(figures: list[dict]) -> str:
    changes = {f["change"] for f in figures}
    if "better" in changes and "worse" in changes:
        return "mixed"
    if "worse" in changes:
        return "worse"
    if "better" in changes:
        return "better"
    return "same"


def comparison_lines(comparison: dict) -> list[str]:
    """The terminal's few lines: which intents got better, worse, were added or dropped."""
    by_change: dict[str, list[str]] = {}
    for row in comparison["intents"]:
        by_change.setdefault(row["change"], []).append(row["name"])
    parts = [f"{change}: {', '.join(names)}" for change, names in by_change.items() if change != "same"]
    same = len(by_change.get("same", []))
    summary = "; ".join(parts) if parts else "no intent changed"
    return [f"Since {comparison['previous']}: {summary}" + (f" ({same} unchanged)." if same and parts else ".")]

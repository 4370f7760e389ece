"""Differences between checkpoints, figure by figure, each with its own 95% interval
(intervals.difference: paired on the units both measured, seeded with the run's seed).

Two kinds, both in metrics.json's "differences":
- "checkpoints": each checkpoint minus the prompted base, the first prompted instruct model
  (`NAME=PATH@TEMPLATE`), the baseline every row of the report is read against;
- "between": the pairs of the `compare` setting, each `NAME minus OTHER`; left unset, each
  checkpoint minus every other checkpoint listed before it, the base aside (listed in the order
  they were made, a newer checkpoint minus an older one: the persona simulator minus the simulator
  it was continued from).

Every figure that keeps its items (built with intervals.figure or mean_figure) gets a difference,
whoever added it.
"""

from __future__ import annotations

from userlm.errors import UserError

from .intervals import difference

PAIR_WORD = " minus "


def base_name(results: dict) -> str | None:
    return next((name for name, c in results["checkpoints"].items() if c.get("prompted")), None)


def parse_pair(text: str, names: list[str]) -> tuple[str, str]:
    """`NAME minus OTHER` as (NAME, OTHER), both checkpoint names."""
    first, word, second = text.partition(PAIR_WORD)
    if not word or first.strip() not in names or second.strip() not in names or first.strip() == second.strip():
        raise UserError(
            f"Give each comparison as 'NAME{PAIR_WORD}OTHER' with two different checkpoint names "
            f"({', '.join(names)}), not {text!r}."
        )
    return first.strip(), second.strip()


def compared_pairs(names: list[str], base: str | None, compare: list[str] | None) -> list[tuple[str, str]]:
    """The pairs `compare` names; unset, each checkpoint other than the base minus each earlier one."""
    if compare is not None:
        return [parse_pair(text, names) for text in compare]
    others = [n for n in names if n != base]
    return [(later, earlier) for k, later in enumerate(others) for earlier in others[:k]]


def figure_differences(checkpoint: dict, other: dict, seed: int) -> dict:
    """{metric: checkpoint − other} for every figure both keep the items of."""
    pairs = (
        (key, entry, other.get(key))
        for key, entry in checkpoint.items()
        if isinstance(entry, dict) and "items" in entry
    )
    return {key: d for key, entry, theirs in pairs if theirs and (d := difference(entry, theirs, seed=seed))}


def checkpoint_differences(results: dict) -> dict:
    """{"base": its name or None, "checkpoints": {name: {metric: name − base}},
    "between": [{"minuend", "subtrahend", "figures": {metric: minuend − subtrahend}}]}."""
    base = base_name(results)
    seed = results["settings"]["seed"]
    checkpoints = results["checkpoints"]
    return {
        "base": base,
        "checkpoints": {
            name: figure_differences(checkpoint, checkpoints[base], seed)
            for name, checkpoint in checkpoints.items()
            if base is not None and name != base
        },
        "between": [
            {"minuend": a, "subtrahend": b, "figures": figure_differences(checkpoints[a], checkpoints[b], seed)}
            for a, b in compared_pairs(list(checkpoints), base, results["settings"].get("compare"))
        ],
    }

"""Each checkpoint minus the prompted base, figure by figure, each difference with its own 95%
interval (intervals.difference: paired on the units both measured, seeded with the run's seed).

The base is the first prompted instruct model (`NAME=PATH@TEMPLATE`), the baseline the report
compares against; without one there are no differences. Every figure that keeps its items
(built with intervals.figure or mean_figure) gets a difference, whoever added it.
"""

from __future__ import annotations

from .intervals import difference


def base_name(results: dict) -> str | None:
    return next((name for name, c in results["checkpoints"].items() if c.get("prompted")), None)


def base_differences(results: dict) -> dict:
    """{"base": its name or None, "checkpoints": {name: {metric: difference}}} for every other checkpoint."""
    base = base_name(results)
    if base is None:
        return {"base": None, "checkpoints": {}}
    seed = results["settings"]["seed"]
    reference = results["checkpoints"][base]
    found = {}
    for name, checkpoint in results["checkpoints"].items():
        if name == base:
            continue
        pairs = (
            (key, entry, reference.get(key))
            for key, entry in checkpoint.items()
            if isinstance(entry, dict) and "items" in entry
        )
        found[name] = {key: d for key, entry, other in pairs if other and (d := difference(entry, other, seed=seed))}
    return {"base": base, "checkpoints": found}

"""What a termination AUC is up against with no model at all: at each held-out decision point,
how often the train split's users left at the same (scope sentence of the intent, user turns so far).

The heuristic intents end with the conversation's scope (`data_prep.intents.SCOPES`), written
from how many turns the user wrote, so with them this reference ranks the ends almost perfectly
and a simulator's AUC says how well it obeys its intent's scope. With intents that carry no
scope sentence the key is the turn count alone. Streamed, only the counts kept, from the first
`MAX_TRAIN_LINES` lines of the train split: a table of a few dozen cells fills long before that,
and a WildChat-scale split would otherwise take minutes to parse.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from userlm.data_prep.intents import SCOPES
from userlm.data_prep.samples import open_lines, split_files

from .end_probability import end_probability_metrics

LABEL = "no model: the train split's end rate by intent scope and turn"
MAX_TRAIN_LINES = 200_000


def reference_key(point: dict) -> tuple[int, int]:
    """(index of the intent's scope sentence in SCOPES, or -1; user turns in the prompt)."""
    first = point["prompt"][0]
    system = first.get("content", "") if first.get("role") == "system" else ""
    scope = next((i for i, sentence in enumerate(SCOPES) if sentence in system), -1)
    return scope, sum(m.get("role") == "user" for m in point["prompt"])


def end_rates(seen: Counter, ended: Counter, points: list[dict]) -> list[float]:
    """Each point's key's end rate, add-one smoothed toward the overall rate (a key never seen scores that rate)."""
    overall = (sum(ended.values()) + 1) / (sum(seen.values()) + 2)
    return [(ended[key] + overall) / (seen[key] + 1) for key in map(reference_key, points)]


def end_reference(data: Path, points: list[dict]) -> dict | None:
    """The reference's ROC AUC at `points`, from the train split beside `data`; None without one."""
    train = split_files(Path(data).parent).get("train")
    if train is None or train.resolve() == Path(data).resolve() or not points:
        return None
    seen, ended, unusable = Counter(), Counter(), 0
    for number, line in open_lines(train):
        if number > MAX_TRAIN_LINES:
            break
        try:
            sample = json.loads(line)
            if sample["prompt"][-1]["role"] != "assistant":
                continue  # a first turn: nobody leaves before writing
            key = reference_key(sample)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            unusable += 1
            continue
        seen[key] += 1
        ended[key] += bool(sample.get("is_end"))
    if not seen:
        return None
    metrics = end_probability_metrics(end_rates(seen, ended, points), [bool(p["is_end"]) for p in points])
    return {**metrics, "source": LABEL, "train_decision_points": sum(seen.values()), "train_unusable_lines": unusable}

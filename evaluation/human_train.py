"""The human reference of a figure the heuristic intents shape, measured on the train split.

Intent decomposition compares a first turn with its intent, and the heuristic intents were reworded
against the bundled test split's figure (docs/evaluation.md#the-test-split-is-touched-once): the
test split's human value is no clean reference. The train split played no part in writing the
heuristic, so the report's human row is the same measure on a seeded sample of `SAMPLE` of its
first turns, one per distinct intent, from its first `MAX_TRAIN_LINES` lines (streamed: a
WildChat-scale split would otherwise take minutes to parse). The other human rows read real text
alone (diversity, distinct-n, naturalness, style) and stay on the test subsets the checkpoints are
measured on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from userlm.flipped.samples import open_lines, split_files

from .end_reference import MAX_TRAIN_LINES
from .intervals import mean_figure
from .metrics import intent_overlap
from .subsets import intent_of

SAMPLE = 1000
SOURCE = "human (train split, a sample of its first turns: no part in writing the heuristic intents)"


def train_first_turns(data: Path, *, seed: int) -> tuple[list[tuple[str, str]], int]:
    """([(first turn, intent)] sampled from the train split beside `data`, unusable lines); none without one."""
    train = split_files(Path(data).parent).get("train")
    if train is None or train.resolve() == Path(data).resolve():
        return [], 0
    by_intent: dict[str, str] = {}
    unusable = 0
    for number, line in open_lines(train):
        if number > MAX_TRAIN_LINES:
            break
        try:
            sample = json.loads(line)
            if sample["turn_index"] != 0 or sample["is_end"] or sample["prompt"][0]["role"] != "system":
                continue
            by_intent.setdefault(intent_of(sample), sample["completion"][0]["content"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            unusable += 1
    pairs = sorted((turn, intent) for intent, turn in by_intent.items())
    return random.Random(f"{seed}-human-train").sample(pairs, min(SAMPLE, len(pairs))), unusable


def train_intent_decomposition(data: Path, *, seed: int) -> dict | None:
    """The real users' intent decomposition on the train split's sample, in percent, by intent."""
    pairs, unusable = train_first_turns(data, seed=seed)
    if not pairs:
        return None
    return {
        **mean_figure(
            [intent_overlap(turn, intent) for turn, intent in pairs],
            seed=seed,
            ids=[intent for _, intent in pairs],
            unit="intent",
            scale=100,
        ),
        "source": SOURCE,
        "split": "train",
        "train_unusable_lines": unusable,
    }

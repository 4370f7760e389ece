"""The floor a termination figure must beat, with no model: at each held-out decision point, how often
the train split's users left at the same place, by what the conversation so far shows.

- `turn_index`: the user turns so far (the floor the report prints beside P(end));
- `words_so_far`: the words of the conversation so far, in doubling bins.

Each is scored like a checkpoint: its ROC AUC and its expected F1 when each point is left with
the train split's rate there, at the P(end) points; and that expected F1 again at the points
where the checkpoints sample a turn (the sampled termination F1's floor: a sampler that leaves
at those rates scores it on average). The intent's scope sentence is no key: written from the whole
conversation's length, it gives the answer away (the earlier reference by scope and turn ranked
the quickstart's held-out points at AUC 1.00), and the *when* points carry none. Streamed, only
the counts kept, from the first `MAX_TRAIN_LINES` lines of the train split: tables of a few dozen
cells fill long before that, and a WildChat-scale split would otherwise take minutes to parse.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from userlm.flipped.samples import open_lines, split_files

from .end_probability import end_probability_metrics, expected_f1
from .intervals import difference

MAX_TRAIN_LINES = 200_000


def turn_index(point: dict) -> int:
    return sum(m["role"] == "user" for m in point["prompt"])


def words_so_far(point: dict) -> int:
    """The doubling bin of the whitespace words of the conversation so far (0, 1, 2-3, 4-7, ...)."""
    return sum(len(m["content"].split()) for m in point["prompt"] if m["role"] != "system").bit_length()


REFERENCES = {
    "turn_index": (turn_index, "no model: the train split's end rate at the same user turn"),
    "words_so_far": (
        words_so_far,
        "no model: the train split's end rate at the same length so far in words (doubling bins)",
    ),
}


def end_rates(seen: Counter, ended: Counter, keys: list) -> list[float]:
    """Each key's end rate, add-one smoothed toward the overall rate (a key never seen scores that rate)."""
    overall = (sum(ended.values()) + 1) / (sum(seen.values()) + 2)
    return [(ended[key] + overall) / (seen[key] + 1) for key in keys]


def end_reference(data: Path, points: list[dict], *, sampled_points: list[dict] = (), seed: int = 0) -> dict:
    """{"termination_auc": {name: figure}, "termination_expected_f1": {name: figure}} at `points`, and
    {"termination_f1": {name: figure}} at `sampled_points` where given, for each reference, learnt
    from the train split beside `data`; empty without one."""
    train = split_files(Path(data).parent).get("train")
    if train is None or train.resolve() == Path(data).resolve() or not (points or sampled_points):
        return {}
    seen = {name: Counter() for name in REFERENCES}
    ended = {name: Counter() for name in REFERENCES}
    unusable = 0
    for number, line in open_lines(train):
        if number > MAX_TRAIN_LINES:
            break
        try:
            sample = json.loads(line)
            if sample["prompt"][-1]["role"] != "assistant":
                continue  # a first turn: nobody leaves before writing
            keys = {name: key(sample) for name, (key, _) in REFERENCES.items()}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            unusable += 1
            continue
        for name, key in keys.items():
            seen[name][key] += 1
            ended[name][key] += bool(sample.get("is_end"))
    if not seen["turn_index"]:
        return {}
    real = [bool(p["is_end"]) for p in points]
    conversations = [p["conversation_id"] for p in points]
    result: dict = {
        key: {}
        for key, wanted in (
            ("termination_auc", points),
            ("termination_expected_f1", points),
            ("termination_f1", sampled_points),
        )
        if wanted
    }
    for name, (key, label) in REFERENCES.items():
        about = {"source": label, "train_decision_points": sum(seen[name].values()), "train_unusable_lines": unusable}
        if points:
            rates = end_rates(seen[name], ended[name], [key(p) for p in points])
            result["termination_auc"][name] = {
                **end_probability_metrics(rates, real, conversations=conversations, seed=seed),
                **about,
            }
            result["termination_expected_f1"][name] = {
                **expected_f1(rates, real, conversations=conversations, seed=seed),
                **about,
            }
        if sampled_points:
            result["termination_f1"][name] = {
                **expected_f1(
                    end_rates(seen[name], ended[name], [key(p) for p in sampled_points]),
                    [bool(p["is_end"]) for p in sampled_points],
                    conversations=[p["conversation_id"] for p in sampled_points],
                    seed=seed,
                ),
                **about,
            }
    return result


def add_floor_differences(checkpoint: dict, reference: dict, *, seed: int) -> None:
    """Put beside each of the checkpoint's termination figures its difference from each no-model
    reference (`minus_reference`, paired on the conversations both read): what it has over the floor."""
    for key, floors in reference.items():
        figure = checkpoint.get(key)
        if figure is not None:
            figure["minus_reference"] = {name: difference(figure, floor, seed=seed) for name, floor in floors.items()}

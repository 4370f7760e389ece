"""The no-model termination reference (evaluation/end_reference.py): the train split's end rate by
intent scope and user turns so far, scored at held-out decision points, on hand-computed examples."""

from __future__ import annotations

import json

import pytest

from userlm.data_prep.intents import SCOPES
from userlm.evaluation.end_reference import LABEL, end_reference

SINGLE, ONCE = SCOPES[0], SCOPES[1]


def point(scope: str, user_turns: int, is_end: bool) -> dict:
    system = {"role": "system", "content": f"You are a user chatting with an assistant language model to cook. {scope}".strip()}
    history = [m for _ in range(user_turns) for m in ({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})]
    return {"prompt": [system, *history], "completion": [{"role": "user", "content": "<|endconversation|>" if is_end else "more"}],
            "conversation_id": "c", "turn_index": user_turns, "is_end": is_end}


def write(path, samples, extra_lines=()):
    path.write_text("".join(json.dumps(s) + "\n" for s in samples) + "".join(line + "\n" for line in extra_lines))


def test_end_rates_by_scope_and_turn_rank_the_held_out_points(tmp_path):
    # Train decision points: a single answer at turn 1 ends (twice); follow up once at turn 1 goes on (twice), at
    # turn 2 ends (once). A first turn (nobody leaves before writing) is not a decision point; a broken line is counted.
    first_turn = {**point(SINGLE, 0, False), "prompt": [point(SINGLE, 0, False)["prompt"][0]]}
    write(tmp_path / "train.jsonl", [point(SINGLE, 1, True)] * 2 + [point(ONCE, 1, False)] * 2 + [point(ONCE, 2, True), first_turn],
          extra_lines=["{not json"])
    write(tmp_path / "test.jsonl", [])
    # Overall rate (3 + 1) / (5 + 2) = 4/7; each key's rate (ends + 4/7) / (seen + 1):
    # single@1 (2 + 4/7) / 3 = 6/7, once@1 (0 + 4/7) / 3 = 4/21, once@2 (1 + 4/7) / 2 = 11/14, unseen (no scope)@1 4/7.
    held_out = [point(SINGLE, 1, True), point(ONCE, 1, False), point("", 1, True), point(ONCE, 2, False)]

    reference = end_reference(tmp_path / "test.jsonl", held_out)

    # Ends {6/7, 4/7} against continues {4/21, 11/14}: three of the four pairs ordered right.
    assert reference["value"] == pytest.approx(0.75)
    assert reference["mean_at_ends"] == pytest.approx(5 / 7) and reference["mean_at_continues"] == pytest.approx(41 / 84)
    assert (reference["n"], reference["real_end_points"]) == (4, 2)
    assert (reference["train_decision_points"], reference["train_unusable_lines"]) == (5, 1)
    assert reference["source"] == LABEL and reference["roc"][0] == (0.0, 0.0) and reference["roc"][-1] == (1.0, 1.0)


def test_no_reference_without_a_train_split_beside_the_test_data(tmp_path):
    write(tmp_path / "test.jsonl", [point(SINGLE, 1, True)])
    assert end_reference(tmp_path / "test.jsonl", [point(SINGLE, 1, True), point(ONCE, 1, False)]) is None

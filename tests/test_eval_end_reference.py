"""The no-model termination floors (evaluation/end_reference.py): the train split's end rate by user turn
and by words so far, scored at held-out decision points, on hand-computed examples."""

from __future__ import annotations

import json

import pytest

from userlm.evaluation.end_probability import end_probability_metrics
from userlm.evaluation.end_reference import REFERENCES, add_floor_differences, end_reference
from userlm.evaluation.intervals import figure
from userlm.flipped.scope import SCOPES

SINGLE, ONCE = SCOPES[0], SCOPES[1]


def point(user_turns: int, is_end: bool, scope: str = "", conversation: str = "c") -> dict:
    system = {
        "role": "system",
        "content": f"You are a user chatting with an assistant language model to cook. {scope}".strip(),
    }
    history = [
        m for _ in range(user_turns) for m in ({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})
    ]
    return {
        "prompt": [system, *history],
        "completion": [{"role": "user", "content": "<|endconversation|>" if is_end else "more"}],
        "conversation_id": conversation,
        "turn_index": user_turns,
        "is_end": is_end,
    }


def write(path, samples, extra_lines=()):
    path.write_text("".join(json.dumps(s) + "\n" for s in samples) + "".join(line + "\n" for line in extra_lines))


# Held-out points, each its own conversation: (user turns so far, real end).
HELD_OUT = [
    point(1, True, conversation="h1"),
    point(2, False, conversation="h2"),
    point(3, True, conversation="h3"),
    point(1, False, conversation="h4"),
]


@pytest.fixture
def test_file(tmp_path):
    # Train decision points: at turn 1 two of three users leave, at turn 2 none of two; the scope sentences
    # differ and must not matter. A first turn (nobody leaves before writing) is no decision point; a broken
    # line is counted.
    first_turn = {**point(0, False), "prompt": [point(0, False)["prompt"][0]]}
    train = [
        point(1, True, SINGLE),
        point(1, True, ONCE),
        point(1, False, SINGLE),
        point(2, False, ONCE),
        point(2, False),
        first_turn,
    ]
    write(tmp_path / "train.jsonl", train, extra_lines=["{not json"])
    write(tmp_path / "test.jsonl", [])
    return tmp_path / "test.jsonl"


def test_the_turn_index_floor_on_a_hand_built_set(test_file):
    reference = end_reference(test_file, HELD_OUT, seed=0)
    floor = reference["termination_auc"]["turn_index"]
    # Overall rate (2 + 1) / (5 + 2) = 3/7; each turn's rate (ends + 3/7) / (seen + 1): turn 1 (2 + 3/7) / 4 = 17/28,
    # turn 2 (0 + 3/7) / 3 = 1/7, turn 3 unseen: 3/7 = 12/28.
    # Ends {17/28, 12/28} against continues {1/7, 17/28}: 17/28 beats 1/7 and ties 17/28, 12/28 beats 1/7 only: 2.5 / 4.
    assert floor["value"] == pytest.approx(0.625)
    assert floor["mean_at_ends"] == pytest.approx(29 / 56) and floor["mean_at_continues"] == pytest.approx(21 / 56)
    assert (floor["n"], floor["real_end_points"], floor["unit"], floor["units"]) == (4, 2, "conversation", 4)
    assert floor["ci"][0] <= floor["value"] <= floor["ci"][1] and floor["ci"][1] - floor["ci"][0] > 0
    assert (floor["train_decision_points"], floor["train_unusable_lines"]) == (5, 1)
    assert (
        floor["source"] == REFERENCES["turn_index"][1]
        and floor["roc"][0] == (0.0, 0.0)
        and floor["roc"][-1] == (1.0, 1.0)
    )
    # Each point left with its rate: tp 29/28, fp 21/28, fn 27/28 -> F1 = 58 / (58 + 21 + 27).
    f1 = reference["termination_expected_f1"]["turn_index"]
    assert f1["value"] == pytest.approx(100 * 58 / 106) and f1["n"] == 4 and f1["ci"] is not None


def test_the_words_so_far_reference_bins_the_length_of_the_conversation(test_file):
    words = end_reference(test_file, HELD_OUT, seed=0)["termination_auc"]["words_so_far"]
    # Two words a turn: turn 1 is bin 2 (2 words), turns 2 and 3 bin 3 (4 and 6 words), so the held-out
    # turn-3 end scores turn 2's 1/7: ends {17/28, 1/7} against continues {1/7, 17/28}, two wins of four in halves.
    assert words["value"] == pytest.approx(0.5)
    assert words["source"] == REFERENCES["words_so_far"][1]


def test_a_scope_sentence_at_the_held_out_points_changes_no_floor(test_file):
    scoped = [{**p, "prompt": point(p["turn_index"], p["is_end"], SINGLE)["prompt"]} for p in HELD_OUT]
    plain, with_scope = end_reference(test_file, HELD_OUT, seed=0), end_reference(test_file, scoped, seed=0)
    assert plain["termination_auc"]["turn_index"]["value"] == with_scope["termination_auc"]["turn_index"]["value"]


def test_a_checkpoint_figure_carries_its_difference_from_each_floor(test_file):
    reference = end_reference(test_file, HELD_OUT, seed=0)
    ranks_every_end = end_probability_metrics(
        [0.9, 0.1, 0.8, 0.2],
        [p["is_end"] for p in HELD_OUT],
        conversations=[p["conversation_id"] for p in HELD_OUT],
        seed=0,
    )
    checkpoint = {"termination_auc": ranks_every_end}
    add_floor_differences(checkpoint, reference, seed=0)
    over = checkpoint["termination_auc"]["minus_reference"]
    assert over["turn_index"]["value"] == pytest.approx(1 - 0.625) and over["turn_index"]["paired"]
    assert over["words_so_far"]["value"] == pytest.approx(0.5)


def test_no_floor_without_a_train_split_beside_the_test_data(tmp_path):
    write(tmp_path / "test.jsonl", [point(1, True)])
    assert end_reference(tmp_path / "test.jsonl", HELD_OUT) == {}


def test_the_sampled_termination_f1_has_its_floor_at_its_own_points(test_file):
    # The sampled F1 reads two of the held-out conversations: turn 1 (an end, rate 17/28) and turn 2 (a
    # continue, rate 1/7). Left with those rates: tp 17/28, fp 4/28, fn 11/28 -> F1 = 34 / (34 + 4 + 11).
    sampled = HELD_OUT[:2]
    reference = end_reference(test_file, HELD_OUT, sampled_points=sampled, seed=0)
    floor = reference["termination_f1"]["turn_index"]
    assert floor["value"] == pytest.approx(100 * 34 / 49) and floor["n"] == 2 and floor["unit"] == "conversation"
    assert floor["source"] == REFERENCES["turn_index"][1]
    # Without sampled points there is no such floor; the P(end) floors stay as they were.
    assert "termination_f1" not in end_reference(test_file, HELD_OUT, seed=0)
    assert reference["termination_auc"] == end_reference(test_file, HELD_OUT, seed=0)["termination_auc"]
    # A checkpoint that sampled the end at the end and went on at the continue beats it by 100 − 69.4.
    perfect = figure("f1", [[1.0, 1.0], [0.0, 0.0]], seed=0, ids=["h1", "h2"], unit="conversation", scale=100)
    checkpoint = {"termination_f1": perfect}
    add_floor_differences(checkpoint, reference, seed=0)
    assert checkpoint["termination_f1"]["minus_reference"]["turn_index"]["value"] == pytest.approx(100 - 100 * 34 / 49)

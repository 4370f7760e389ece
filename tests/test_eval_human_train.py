"""Intent decomposition's human reference from the train split (evaluation/human_train.py): the heuristic
intents were reworded against the test split's figure, so the report reads the real users' on data that played
no part in writing them."""

from __future__ import annotations

import json

import pytest

from userlm.evaluation import human_train
from userlm.evaluation.human_train import train_intent_decomposition

PREFIX = "You are a user chatting with an assistant language model to"


def first_turn(intent: str, turn: str, conversation: str, **overrides) -> dict:
    return {
        "prompt": [{"role": "system", "content": f"{PREFIX} {intent}."}],
        "completion": [{"role": "user", "content": turn}],
        "conversation_id": conversation,
        "turn_index": 0,
        "is_end": False,
        **overrides,
    }


def write(path, samples, extra_lines=()):
    path.write_text("".join(json.dumps(s) + "\n" for s in samples) + "".join(line + "\n" for line in extra_lines))


def test_the_human_row_is_measured_on_the_train_split_one_turn_per_intent(tmp_path):
    # Train: "cook pasta" twice (its first turn counts once), "fix a bug" once; a later turn and a broken
    # line are no first turns. Overlap: "cook pasta tonight" shares cook and pasta of its 3 content words,
    # "hello there" nothing: (2/3 + 0) / 2. The test split's turn copies its intent whole and must not count.
    write(
        tmp_path / "train.jsonl",
        [
            first_turn("cook pasta", "cook pasta tonight", "t1"),
            first_turn("cook pasta", "pasta pasta pasta", "t2"),
            first_turn("fix a bug", "hello there", "t3"),
            {**first_turn("fix a bug", "more", "t3"), "turn_index": 1},
        ],
        extra_lines=["{broken"],
    )
    write(tmp_path / "test.jsonl", [first_turn("write a poem", "write a poem", "e1")])
    figure = train_intent_decomposition(tmp_path / "test.jsonl", seed=0)
    assert figure["value"] == pytest.approx(100 * (2 / 3) / 2)
    assert (figure["n"], figure["unit"], figure["split"], figure["train_unusable_lines"]) == (2, "intent", "train", 1)
    assert figure["ci"][0] <= figure["value"] <= figure["ci"][1]
    assert "train split" in figure["source"]


def test_a_fixed_size_seeded_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(human_train, "SAMPLE", 5)
    write(tmp_path / "train.jsonl", [first_turn(f"task {k}", f"task {k} please", f"t{k}") for k in range(20)])
    write(tmp_path / "test.jsonl", [])
    drawn = train_intent_decomposition(tmp_path / "test.jsonl", seed=0)
    assert (
        drawn["n"] == 5
        and drawn["items"]["ids"] == train_intent_decomposition(tmp_path / "test.jsonl", seed=0)["items"]["ids"]
    )
    assert drawn["items"]["ids"] != train_intent_decomposition(tmp_path / "test.jsonl", seed=1)["items"]["ids"]


def test_no_human_row_without_a_train_split(tmp_path):
    write(tmp_path / "test.jsonl", [first_turn("cook pasta", "cook pasta tonight", "e1")])
    assert train_intent_decomposition(tmp_path / "test.jsonl", seed=0) is None

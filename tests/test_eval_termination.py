"""Termination F1 on real tiny models: always and never ending, and one that ends only after
a given assistant phrase, so every prediction must land on its own point."""

from __future__ import annotations

import json

import pytest

from tests.eval_models import make_trigger_model
from userlm.evaluation.termination import decision_points, predict_ends, termination_f1
from userlm.flipped.format import END_MARKER, flip
from userlm.infer.simulator import UserSimulator

PHRASE = " goodbye"  # one token; the model ends only after it


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_decision_points_are_after_every_assistant_turn(eval_test_file):
    points = decision_points(read(eval_test_file))
    # e1: 2 points, e2: 1, e3 (cut log): 2, e4: 2; END at the last point of e1, e2, e4 only.
    assert [(p["conversation_id"], p["is_end"]) for p in points] == [
        ("e1", False),
        ("e1", True),
        ("e2", True),
        ("e3", False),
        ("e3", False),
        ("e4", False),
        ("e4", True),
    ]
    assert all(p["prompt"][-1]["role"] == "assistant" for p in points)


def test_forced_models_generate_what_they_were_built_for(forced_simulator):
    ender = UserSimulator.load(forced_simulator(always_end=True))
    talker = UserSimulator.load(forced_simulator(always_end=False))
    prompt = [
        {"role": "system", "content": "x"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert [(t.text, t.is_end) for t in ender.generate([prompt, prompt[:1]], seed=3)] == [(END_MARKER, True)] * 2
    assert [(t.text, t.is_end) for t in talker.generate([prompt, prompt[:1]], seed=3)] == [("ok", False)] * 2


@pytest.mark.parametrize(
    ("always_end", "expected"),
    [
        # 7 points, 3 real ENDs. Always END: tp 3, fp 4, fn 0 -> P 3/7, R 1, F1 = 6 / (6 + 4) = 60%.
        (True, {"value": 60.0, "precision": 3 / 7, "recall": 1.0, "tp": 3, "fp": 4, "fn": 0}),
        # Never END: tp 0, fp 0, fn 3 -> F1 0.
        (False, {"value": 0.0, "precision": 0.0, "recall": 0.0, "tp": 0, "fp": 0, "fn": 3}),
    ],
)
def test_termination_f1_of_always_and_never_ending_models(forced_simulator, eval_test_file, always_end, expected):
    simulator = UserSimulator.load(forced_simulator(always_end=always_end))
    result = termination_f1(simulator, decision_points(read(eval_test_file)), seed=0, batch_size=3, progress=False)
    assert result["n"] == 7 and result["real_end_points"] == 3
    # The interval resamples the 4 conversations, a conversation's points together.
    assert (result["unit"], result["units"]) == ("conversation", 4) and result["ci"][0] <= result["value"] <= result[
        "ci"
    ][1]
    assert result["predicted_end_points"] == (7 if always_end else 0)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9)


def conversation(cid: str, turns: list[tuple[str, str]], ends: bool) -> dict:
    messages = [
        m
        for user, assistant in turns
        for m in ({"role": "user", "content": user}, {"role": "assistant", "content": assistant})
    ]
    return {
        "conversation_id": cid,
        "user_id": None,
        "source": "test",
        "language": "en",
        "messages": messages,
        "system": None,
        "intent": f"You are a user chatting with an assistant language model to finish task {cid}.",
        "intent_source": "column",
        "persona": None,
        "persona_attrs": None,
        "meta": {"ends": ends},
    }


# Held-out conversations; in order, their decision points are (real END?, phrase in context?):
HELD_OUT = [
    conversation(
        "g1",
        [("how do i sort a list", "Use sorted(xs)."), ("and in reverse?", "Pass reverse=True. Happy coding, goodbye!")],
        ends=True,
    ),
    # (False, False), (True, True): a true positive.
    conversation("g2", [("whats the capital of peru", "Lima, a city of ten million people.")], ends=True),
    # (True, False): a real end the model misses.
    conversation(
        "g3",
        [
            ("plan my week", "Sure; rest on Sunday, goodbye for now."),
            ("wait, what about monday", "Work."),
            ("and tuesday evening?", "Go to the gym."),
            ("and wednesday", "Read a book."),
        ],
        ends=False,
    ),
    # A cut log, so no END point: (False, True) three times, the phrase staying in context: false positives.
    conversation(
        "g4",
        [("fix my sql: selct * from t", "SELECT * FROM t;"), ("works, thanks", "Glad it works, goodbye!")],
        ends=True,
    ),
    # (False, False), (True, True).
    conversation("g5", [("write a haiku about rain", "Soft rain on the roof. See you, goodbye!")], ends=True),
    # (True, True).
    conversation("g6", [("name a prime number", "Seven."), ("another one please", "Eleven.")], ends=True),
    # (False, False), (True, False).
]
REAL_END = [False, True, True, False, False, False, False, True, True, False, True]
PHRASE_SEEN = [False, True, False, True, True, True, False, True, True, False, False]


@pytest.fixture(scope="module")
def phrase_simulator(tmp_path_factory, default_tokenizer):
    folder = tmp_path_factory.mktemp("ends-after-goodbye")
    return UserSimulator.load(
        make_trigger_model(folder, default_tokenizer, trigger=PHRASE, when_present=END_MARKER, otherwise="ok")
    )


def test_a_model_that_ends_only_after_a_phrase_is_scored_point_by_point(phrase_simulator):
    points = decision_points([s for record in HELD_OUT for s in flip(record, "test")])
    assert [p["is_end"] for p in points] == REAL_END
    assert [PHRASE in " ".join(m["content"] for m in p["prompt"]) for p in points] == PHRASE_SEEN
    # Batches of 4 put boundaries after points 4 and 8, inside runs of both answers.
    assert predict_ends(phrase_simulator, points, seed=0, max_new_tokens=4, batch_size=4, progress=False) == PHRASE_SEEN
    result = termination_f1(phrase_simulator, points, seed=0, max_new_tokens=4, batch_size=4, progress=False)
    # tp: g1, g4, g5 ends; fp: the three g3 points; fn: g2 and g6 ends.
    assert (result["tp"], result["fp"], result["fn"]) == (3, 3, 2)
    assert result["precision"] == pytest.approx(3 / 6)
    assert result["recall"] == pytest.approx(3 / 5)
    assert result["value"] == pytest.approx(100 * 2 * 3 / (2 * 3 + 3 + 2))
    assert (result["n"], result["real_end_points"], result["predicted_end_points"]) == (11, 5, 6)


def test_the_phrase_model_continues_with_a_plain_turn(phrase_simulator):
    without = [
        {"role": "system", "content": "x"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    with_phrase = without[:2] + [{"role": "assistant", "content": "hello, goodbye"}]
    turns = phrase_simulator.generate([without, with_phrase], seed=0, max_new_tokens=8)
    assert [(t.text, t.is_end) for t in turns] == [("ok", False), (END_MARKER, True)]

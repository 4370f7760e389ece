"""Termination F1 on models built to always end and never to end, against hand-computed values."""

from __future__ import annotations

import json

import pytest

from userlm.data_prep.format import END_MARKER
from userlm.evaluation.termination import decision_points, termination_f1
from userlm.infer.simulator import UserSimulator


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_decision_points_are_after_every_assistant_turn(eval_test_file):
    points = decision_points(read(eval_test_file))
    # e1: 2 points, e2: 1, e3 (cut log): 2, e4: 2; END at the last point of e1, e2, e4 only.
    assert [(p["conversation_id"], p["is_end"]) for p in points] == [
        ("e1", False), ("e1", True), ("e2", True), ("e3", False), ("e3", False), ("e4", False), ("e4", True),
    ]
    assert all(p["prompt"][-1]["role"] == "assistant" for p in points)


def test_forced_models_generate_what_they_were_built_for(forced_simulator):
    ender = UserSimulator.load(forced_simulator(always_end=True))
    talker = UserSimulator.load(forced_simulator(always_end=False))
    prompt = [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert [(t.text, t.is_end) for t in ender.generate([prompt, prompt[:1]], seed=3)] == [(END_MARKER, True)] * 2
    assert [(t.text, t.is_end) for t in talker.generate([prompt, prompt[:1]], seed=3)] == [("ok", False)] * 2


@pytest.mark.parametrize(
    ("always_end", "expected"),
    [
        # 7 points, 3 real ENDs. Always END: tp 3, fp 4, fn 0 -> P 3/7, R 1, F1 = 6 / (6 + 4) = 0.6.
        (True, {"f1": 0.6, "precision": 3 / 7, "recall": 1.0, "tp": 3, "fp": 4, "fn": 0}),
        # Never END: tp 0, fp 0, fn 3 -> F1 0.
        (False, {"f1": 0.0, "precision": 0.0, "recall": 0.0, "tp": 0, "fp": 0, "fn": 3}),
    ],
)
def test_termination_f1_of_always_and_never_ending_models(forced_simulator, eval_test_file, always_end, expected):
    simulator = UserSimulator.load(forced_simulator(always_end=always_end))
    result = termination_f1(simulator, decision_points(read(eval_test_file)), seed=0, batch_size=3, progress=False)
    assert result["points"] == 7 and result["real_end_points"] == 3
    assert result["predicted_end_points"] == (7 if always_end else 0)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12)

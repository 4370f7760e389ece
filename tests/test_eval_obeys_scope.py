"""Termination obeys scope (evaluation/obeys_scope.py) on real tiny models: one that leaves whenever
its intent says "A single answer", and ones that always or never leave, which ignore the stated length
and so score a third, whatever they do."""

from __future__ import annotations

import json

import pytest

from tests.eval_models import make_trigger_model
from userlm.evaluation.config import EvalConfig
from userlm.evaluation.obeys_scope import CHANCE, STATED, obeys_scope, outcomes
from userlm.evaluation.subsets import draw_subsets
from userlm.flipped.format import END_MARKER
from userlm.flipped.scope import SCOPES
from userlm.infer.simulator import UserSimulator

TOP_P = 0.8


def test_the_three_outcomes_of_each_stated_length_partition_what_the_simulator_does():
    p1, p2 = 0.2, 0.5  # leaves at turn 1 with 0.2, at turn 2 with 0.8 x 0.5 = 0.4, later with 0.4
    expected = [(0.0, 0.2, 0.8), (0.2, 0.4, 0.4), (0.6, 0.4, 0.0)]
    assert all(row == pytest.approx(want) for row, want in zip(outcomes(p1, p2), expected, strict=True))
    # Whatever it does, it is on time for exactly one length in three on average.
    assert sum(on_time for _, on_time, _ in outcomes(p1, p2)) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def scope_points(eval_test_file):
    samples = [json.loads(line) for line in eval_test_file.read_text().splitlines()]
    config = EvalConfig(
        checkpoints=["m=default@chatml"], data=eval_test_file, first_turn_intents=3, scope_conversations=10
    )
    return draw_subsets(samples, config).scope_points


def test_conversations_with_two_decision_points_give_their_first_two(scope_points):
    # e2 has one decision point; e1, e3 and e4 have two.
    assert sorted((p["conversation_id"], p["turn_index"]) for p in scope_points) == [
        ("e1", 1),
        ("e1", 2),
        ("e3", 1),
        ("e3", 2),
        ("e4", 1),
        ("e4", 2),
    ]


def test_a_simulator_that_leaves_when_told_a_single_answer(scope_points, tmp_path, default_tokenizer):
    # " single" is one token, in the intent only when the stated length is a single answer.
    simulator = UserSimulator.load(
        make_trigger_model(
            tmp_path / "single", default_tokenizer, trigger=" single", when_present=END_MARKER, otherwise="ok"
        )
    )
    result = obeys_scope(simulator, scope_points, top_p=TOP_P, seed=0, progress=False)
    by_length = result["by_stated_length"]
    # Told a single answer it leaves at turn 1 (on time); told to follow up once it never leaves (late);
    # told a few times it does not leave by turn 2 (on time as far as two points show).
    assert by_length[SCOPES[0]]["on_time"]["value"] == pytest.approx(100, abs=0.1)
    assert by_length[SCOPES[1]]["late"]["value"] == pytest.approx(100, abs=0.1)
    assert by_length[SCOPES[2]]["on_time"]["value"] == pytest.approx(100, abs=0.1)
    assert result["value"] == pytest.approx(200 / 3, abs=0.1) and result["late"]["value"] == pytest.approx(
        100 / 3, abs=0.1
    )
    assert result["early"]["value"] == pytest.approx(0, abs=0.1)
    assert (result["n"], result["unit"], result["units"], result["chance"]) == (3, "conversation", 3, CHANCE)


@pytest.mark.parametrize(("always_end", "missed"), [(True, "early"), (False, "late")])
def test_simulators_that_ignore_the_stated_length_score_a_third(scope_points, forced_simulator, always_end, missed):
    simulator = UserSimulator.load(forced_simulator(always_end=always_end))
    result = obeys_scope(simulator, scope_points, top_p=TOP_P, seed=0, progress=False)
    assert result["value"] == pytest.approx(CHANCE, abs=0.1) and result[missed]["value"] == pytest.approx(
        200 / 3, abs=0.1
    )
    # Always leaving is on time only when told a single answer; never leaving, only when told a few times.
    on_time = STATED[0] if always_end else STATED[2]
    assert result["by_stated_length"][on_time]["on_time"]["value"] == pytest.approx(100, abs=0.1)

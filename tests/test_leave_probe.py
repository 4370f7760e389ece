"""Leaves because it was served well: the shipped good-answer/bad-answer probes are well-formed, the
figure separates a model that leaves after a good answer from one that does not and runs on the real
SmolLM2, and `userlm test`'s tables give "ended after a good answer" where a judge gave verdicts."""

from __future__ import annotations

import json
from statistics import fmean

import pytest

from tests.eval_models import make_trigger_model
from userlm.errors import UserError
from userlm.evaluation.leave_probe import BAD_KINDS, FIELDS, leave_probe, read_probes, shipped_probes
from userlm.flipped.format import END_MARKER, INTENT_PREFIX
from userlm.flipped.scope import SCOPES
from userlm.infer.simulator import UserSimulator
from userlm.infer.suite.outcomes import group_stats, outcome_of
from userlm.infer.suite.report import table_section


def test_the_shipped_probes_are_well_formed():
    probes, bad = read_probes()
    assert bad == [] and shipped_probes().parent.name == "evaluation"
    assert len(probes) >= 24 and len({p["intent"] for p in probes}) == len(probes)
    kinds = [p["bad_kind"] for p in probes]
    assert abs(kinds.count("refusal") - kinds.count("off_topic")) <= 1 and set(kinds) == set(BAD_KINDS)
    for probe in probes:
        assert set(probe) == set(FIELDS)
        assert probe["intent"].startswith(INTENT_PREFIX) and not any(s in probe["intent"] for s in SCOPES)
        assert probe["good_answer"] != probe["bad_answer"]
        # A refusal says it will not help; an off-topic answer answers something else, without refusing.
        refuses = any(word in probe["bad_answer"] for word in ("can't", "cannot", "unable", "not able"))
        assert refuses == (probe["bad_kind"] == "refusal"), probe["id"]


def write_probes(path, probes: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    path.write_text("".join(json.dumps(p) + "\n" for p in probes) + "".join(f"{line}\n" for line in extra_lines))


def probe(k: int, kind: str) -> dict:
    return {
        "id": f"p{k}",
        "intent": f"{INTENT_PREFIX} get help with task {k}.",
        "first_turn": f"help me with task {k}",
        "good_answer": f"Here is the full solution to task {k}. Done",
        "bad_answer": "I cannot help with that." if kind == "refusal" else "Paris is the capital of France.",
        "bad_kind": kind,
    }


def test_a_model_that_leaves_after_a_full_answer_shows_a_positive_difference(tmp_path, default_tokenizer):
    # A tiny real Llama that writes the end marker whenever " Done" is in its context (only the good
    # answers say it), and "ok" otherwise: P(end) near 1 after every good answer and near 0 after every bad one.
    folder = make_trigger_model(
        tmp_path / "leaver", default_tokenizer, trigger=" Done", when_present=END_MARKER, otherwise="ok"
    )
    leaver = UserSimulator.load(folder)
    path = tmp_path / "probes.jsonl"
    write_probes(path, [probe(k, BAD_KINDS[k % 2]) for k in range(6)], ('{"id": "broken"}', "not json"))
    result = leave_probe(leaver, path, progress=False)
    assert result["probes"] == 6 and result["unusable_lines"] == 2
    assert result["after_good"]["value"] > 0.99 and result["after_bad"]["value"] < 0.01
    difference = result["good_minus_bad"]
    assert (difference["unit"], difference["units"], difference["n"]) == ("intent", 6, 6)
    assert difference["value"] > 0.98 and difference["ci"][0] > 0.98
    assert result["after_refusal"]["n"] == result["after_off_topic"]["n"] == 3


def test_too_few_usable_probes_is_one_sentence(tmp_path):
    path = tmp_path / "probes.jsonl"
    write_probes(path, [probe(0, "refusal"), {**probe(1, "refusal"), "bad_kind": "rude"}])
    with pytest.raises(UserError, match="fewer than two usable leave probes"):
        read_probes(path)


def test_the_probe_on_the_real_default(default_model_dir, tmp_path):
    # Six of the shipped probes, three of each kind: the prompted base reads each point in a pass of its own.
    probes, _ = read_probes()
    path = tmp_path / "probes.jsonl"
    write_probes(path, probes[:6])
    base = UserSimulator.load("default", template="chatml")
    result = leave_probe(base, path, progress=False)
    good = [row["after_good"] for row in result["per_intent"]]
    bad = [row["after_bad"] for row in result["per_intent"]]
    assert result["probes"] == len(good) == 6 and result["after_refusal"]["n"] == result["after_off_topic"]["n"] == 3
    assert result["after_good"]["value"] == pytest.approx(fmean(good))
    assert result["good_minus_bad"]["value"] == pytest.approx(fmean(good) - fmean(bad))
    ci = result["good_minus_bad"]["ci"]
    assert ci[0] <= result["good_minus_bad"]["value"] <= ci[1]
    # The prompted base lacks the end marker and spells it in several tokens: it almost never leaves.
    assert max(good + bad) < 1e-3


def outcome(number: int, reason: str, success: bool | None) -> dict:
    record = {
        "conversation_id": f"c{number}",
        "termination_reason": reason,
        "trial": 0,
        "seed": number,
        "turns": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    }
    verdict = None if success is None else {"success": success, "reason": "judged"}
    return outcome_of(record, "refund", "default", verdict, judged=success is not None)


def test_the_suite_tables_say_how_often_the_user_ended_after_a_good_or_a_bad_answer():
    judged = [
        outcome(0, "user_ended", True),
        outcome(1, "user_ended", True),
        outcome(2, "max_turns", True),
        outcome(3, "user_ended", False),
        outcome(4, "max_turns", False),
        outcome(5, "max_turns", False),
        outcome(6, "assistant_error", False),  # the user had no say: left out of the bad answers
    ]
    stats = group_stats(judged)
    assert stats["ended_after_good_rate"] == pytest.approx(2 / 3)
    assert stats["ended_after_bad_rate"] == pytest.approx(1 / 3)
    row = [{"name": "refund", "stats": stats, "checks": [], "passed": True}]
    html = table_section("Per intent", "intent-table", "intent", row, None, True)
    assert "<th>ended after a good answer</th>" in html and "<td>67%</td><td>33%</td>" in html
    # Without a judge there is nothing to say which answers were good: no such figures, no such columns.
    unjudged = group_stats([outcome(0, "user_ended", None), outcome(1, "max_turns", None)])
    assert unjudged["ended_after_good_rate"] is None and unjudged["ended_after_bad_rate"] is None
    html = table_section("Per intent", "intent-table", "intent", [{**row[0], "stats": unjudged}], None, False)
    assert "ended after a good answer" not in html

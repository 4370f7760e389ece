"""`userlm test` end to end against Python callables, with a real tiny simulator whose behaviour is
known: it opens with "Hello" or "Please" (its seed decides) and leaves as soon as the assistant
has said "Done" (a one-layer Llama with hand-set weights, tests/eval_models.py). So every
outcome can be read off the transcript, and the assistant under test decides it.

The gate, the JUnit file (read back with junitparser), resuming, retrying failed conversations,
changed suites, `--compare`, and a judge served by a real `transformers serve` are checked here;
a served assistant and the report in Chromium are in tests/test_infer_suite_served.py."""

from __future__ import annotations

import importlib
import json
import re
import socket
import sys
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from tests.eval_models import make_trigger_model, one_token
from userlm.cli import main
from userlm.errors import UserError
from userlm.flipped.format import END_MARKER

GOALS = {
    "book": "book a table for two",
    "refund": "get a refund for a broken kettle",
    "reset": "reset a forgotten password",
}
INTENTS = {name: f"You are a user chatting with an assistant language model to {goal}." for name, goal in GOALS.items()}
PERSONAS = {"terse": "Writes one word at a time.", "chatty": "Writes long, friendly messages."}
BOTS = """
def helpful(messages):
    return "Done." if messages[-1]["content"] == "Hello" else "Tell me more."

def other_way(messages):
    return "Done." if messages[-1]["content"] == "Please" else "Tell me more."

def crashes_on_please(messages):
    if messages[-1]["content"] == "Please":
        raise RuntimeError("the bot crashed")
    return "Done."

def done_but_sorry(messages):
    return "Done." if messages[-1]["content"] == "Hello" else "Done. Unfortunately that is all."
"""


def make_reactive_simulator(folder: Path, tokenizer) -> Path:
    """Opens with "Hello" or "Please" at equal odds, then says one of them each turn until the
    assistant's text holds the token "Done"; from then on its turn is the end marker."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    make_trigger_model(folder, tokenizer, trigger="Done", when_present=END_MARKER, otherwise="Hello", flipped=True)
    model, saved = LlamaForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    hello, please = one_token(saved, "Hello"), one_token(saved, "Please")
    with torch.no_grad():  # "Please" becomes a second answer with the same logit and the same end of turn
        model.lm_head.weight[please] = model.lm_head.weight[hello]
        model.model.embed_tokens.weight[please] = model.model.embed_tokens.weight[hello]
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def simulator(tmp_path_factory, default_tokenizer) -> Path:
    return make_reactive_simulator(tmp_path_factory.mktemp("reactive"), default_tokenizer)


@pytest.fixture
def bots(tmp_path, monkeypatch) -> Path:
    (tmp_path / "suite_bots.py").write_text(BOTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_suite(folder: Path, simulator: Path, assistant: str, extra: str = "") -> Path:
    suite = folder / "suite.yaml"
    intents = "".join(f"  - name: {name}\n    intent: {text}\n" for name, text in INTENTS.items())
    personas = "".join(f"  - name: {name}\n    persona: {text}\n" for name, text in PERSONAS.items())
    suite.write_text(
        f"name: bots\nsimulator: {simulator}\nassistant: python:suite_bots:{assistant}\n"
        f"intents:\n{intents}personas:\n{personas}n_per_intent: 2\nmax_turns: 2\nprogress: false\n"
        "guardrails: {min_words: 1, min_turns_before_end: 1, filter_repetition: false}\n" + extra
    )
    return suite


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def conversations(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "conversations.jsonl").read_text().splitlines()]


def user_turns(record: dict) -> list[str]:
    return [t["content"] for t in record["turns"] if t["role"] == "user"]


def replay(record: dict, bot: str) -> str:
    """Check the transcript against the simulator's rule and the bot's code
    (`suite_bots.<bot>`); the termination reason they give."""
    answer, done = None, False
    for turn in record["turns"]:
        if turn["role"] == "assistant":
            assert turn["content"] == answer
            done = answer.startswith("Done")
            continue
        assert (turn["content"] == END_MARKER) == done, "the user leaves right after a 'Done', and only then"
        if done:
            return "user_ended"
        try:
            answer = getattr(importlib.import_module("suite_bots"), bot)([{"role": "user", "content": turn["content"]}])
        except RuntimeError:
            return "assistant_error"
    return "max_turns"


def test_suite_outcomes_gate_junit_and_resume(tmp_path, simulator, bots, capsys):
    out = tmp_path / "run"
    suite = write_suite(tmp_path, simulator, "crashes_on_please")
    from transformers.utils import logging as transformers_logging

    code = main(["test", str(suite), "--out", str(out)])
    printed = capsys.readouterr().out
    # progress: false quiets transformers' loading bars too.
    assert not transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
    records = conversations(out)
    assert len(records) == 3 * 2 * 2
    # Each outcome is what the simulator and the bot did: "Please" crashes the
    # bot, "Hello" gets "Done.", the user leaves.
    for record in records:
        assert record["termination_reason"] == replay(record, "crashes_on_please")
    results = results_of(out)
    errors = sum(r["termination_reason"] == "assistant_error" for r in records)
    assert 0 < errors < len(records), "the seeds should give both openings"
    assert results["signal"]["kind"] == "user_ended" and "no judge" in results["signal"]["text"]
    assert f"Success signal: {results['signal']['text']}." in printed
    # The default gate allows no assistant error, so the suite fails, with one line per failed threshold.
    assert code == 1 and not results["passed"]
    suite_rate = errors / len(records)
    assert results["failed"] == [
        f"suite: share of assistant errors {suite_rate:.2f} ({errors} of 12 "
        "conversations) is above max_assistant_errors 0"
    ]
    assert printed.count("FAILED ") == 1 and f"FAILED {results['failed'][0]}" in printed
    for row in results["intents"]:
        mine = [r for r in records if r["intent"] == INTENTS[row["name"]]]
        ended = sum(r["termination_reason"] == "user_ended" for r in mine)
        assert row["stats"]["success_rate"] == ended / 4 == row["stats"]["user_ended_rate"]
    # Seeds are recorded, one per conversation, and reappear in the results.
    assert sorted(o["seed"] for o in results["outcomes"]) == sorted(r["seed"] for r in records)
    assert len({r["seed"] for r in records}) == 12

    # JUnit, read by a JUnit reader: one case per intent plus the suite's thresholds; only the suite case fails.
    junit = JUnitXml.fromfile(str(out / "junit.xml"))
    [testsuite] = list(junit)
    cases = {case.name: case for case in testsuite}
    assert set(cases) == {"suite thresholds", *INTENTS} and testsuite.tests == 4 and testsuite.failures == 1
    [failure] = cases["suite thresholds"].result
    assert isinstance(failure, Failure) and failure.message == results["failed"][0]
    assert all(case.is_passed for name, case in cases.items() if name != "suite thresholds")
    # Each case's time is its conversations' wall times, added up (not 0).
    for name in INTENTS:
        timed = sum(r["seconds"] for r in records if r["intent"] == INTENTS[name])
        assert cases[name].time == pytest.approx(timed, abs=1e-3) and timed > 0

    # A rerun skips the finished conversations and retries the failed ones; the fixed bot passes the gate.
    (bots / "suite_bots.py").write_text(BOTS.replace('raise RuntimeError("the bot crashed")', 'return "Done."'))
    sys.modules.pop("suite_bots", None)
    assert main(["test", str(suite), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rerun = results_of(out)
    assert rerun["simulated"] == {"now": errors, "reused": 12 - errors, "retried": errors}
    assert rerun["passed"] and rerun["failed"] == [] and "Gate passed" in printed
    records = conversations(out)
    assert len(records) == 12 and {r["termination_reason"] for r in records} == {"user_ended"}
    assert JUnitXml.fromfile(str(out / "junit.xml")).failures == 0


def test_gate_fails_and_passes_on_either_side_of_the_measured_values(tmp_path, simulator, bots, capsys):
    out = tmp_path / "run"
    suite = write_suite(tmp_path, simulator, "helpful", "thresholds: {}\n")
    assert main(["test", str(suite), "--out", str(out)]) == 0
    measured = results_of(out)
    rates = {row["name"]: row["stats"]["success_rate"] for row in measured["intents"]}
    turns = {row["name"]: row["stats"]["mean_user_turns"] for row in measured["intents"]}
    overall = measured["stats"]["success_rate"]
    assert 0 < overall < 1, "the seeds should give both openings"
    # Either side of each measured value; the conversations are reused, so only the gate changes.
    below = [f"thresholds.min_success={max(overall - 0.05, 0)}"]
    above = [f"thresholds.min_success={overall + 0.05}"]
    name = min(rates, key=rates.get)
    per_intent = tmp_path / "per_intent.yaml"
    for side, min_success, max_turns in (
        ("pass", rates[name], turns[name]),
        ("fail", rates[name] + 0.05, turns[name] - 0.25),
    ):
        per_intent.write_text(
            suite.read_text().replace(
                f"  - name: {name}\n",
                f"  - name: {name}\n    thresholds: {{min_success: {min_success}, max_mean_user_turns: {max_turns}}}\n",
            )
        )
        code = main(["test", str(per_intent), "--out", str(out)])
        result = results_of(out)
        assert result["simulated"]["now"] == 0
        if side == "pass":
            assert code == 0 and result["passed"] and result["checks"] == 2
        else:
            assert code == 1 and len(result["failed"]) == 2
            assert (
                result["failed"][0].startswith(f"intent {name!r}: success rate {rates[name]:.2f}")
                and "is below min_success" in result["failed"][0]
            )
            assert "mean user turns" in result["failed"][1] and "is above max_mean_user_turns" in result["failed"][1]
            junit = JUnitXml.fromfile(str(out / "junit.xml"))
            failing = [case.name for suite_ in junit for case in suite_ if not case.is_passed]
            assert failing == [name]
    for words, code in ((below, 0), (above, 1)):
        assert main(["test", str(suite), "--out", str(out), *words]) == code
    printed = capsys.readouterr().out
    assert re.search(
        rf"FAILED suite: success rate {overall:.2f} \(\d+ of 12 conversations\) is below min_success", printed
    )
    # intent_thresholds hold every intent to the same bound: the intents above it pass, the others fail.
    bound = max(rates.values())
    assert main(["test", str(suite), "--out", str(out), f"intent_thresholds.min_success={bound}"]) == (
        0 if min(rates.values()) >= bound else 1
    )
    result = results_of(out)
    assert {row["name"] for row in result["intents"] if not row["passed"]} == {
        n for n, rate in rates.items() if rate < bound
    }


def test_a_changed_suite_never_reuses_conversations_and_compare_says_what_changed(tmp_path, simulator, bots, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    suite = write_suite(tmp_path, simulator, "helpful", "thresholds: {}\n")
    assert main(["test", str(suite), "--out", str(first)]) == 0
    # Another assistant into the same folder: nothing reused, and its outcomes are its own.
    assert main(["test", str(suite), "--out", str(first), "assistant=python:suite_bots:other_way"]) == 0
    result = results_of(first)
    assert result["simulated"] == {"now": 12, "reused": 0, "retried": 0}
    for record_id in (o["conversation_id"] for o in result["outcomes"]):
        [record] = [r for r in conversations(first) if r["conversation_id"] == record_id]
        assert record["assistant"]["function"] == "suite_bots:other_way"
        assert record["termination_reason"] == replay(record, "other_way")
    # Another seed: nothing reused either; the same seed again: everything reused.
    for words, reused in ((["seed=5"], 0), (["seed=5"], 12), (["--guardrails.max_attempts", "3"], 0)):
        assert main(["test", str(suite), "--out", str(first), *words]) == 0
        assert results_of(first)["simulated"]["reused"] == reused
    assert len(conversations(first)) == 12 * 4

    # --compare: per intent, better or worse exactly as the success rates moved.
    assert main(["test", str(suite), "--out", str(first)]) == 0
    before = {row["name"]: row["stats"]["success_rate"] for row in results_of(first)["intents"]}
    capsys.readouterr()
    assert (
        main(
            ["test", str(suite), "--out", str(second), "assistant=python:suite_bots:other_way", "--compare", str(first)]
        )
        == 0
    )
    result = results_of(second)
    after = {row["name"]: row["stats"]["success_rate"] for row in result["intents"]}
    changes = {row["name"]: row["change"] for row in result["comparison"]["intents"]}
    assert before != after, "the two bots should differ on some intent"
    for name in INTENTS:
        # Without a judge the success rate is the share the user ended, so the two move together.
        assert changes[name] == (
            "same" if after[name] == before[name] else "better" if after[name] > before[name] else "worse"
        )
        row = next(row for row in result["comparison"]["intents"] if row["name"] == name)
        success = next(f for f in row["figures"] if f["figure"] == "success_rate")
        assert (success["before"], success["after"]) == (before[name], after[name])
    assert f"Since {first}:" in capsys.readouterr().out


def test_refusals_before_anything_runs(tmp_path, simulator, bots):
    suite = write_suite(tmp_path, simulator, "helpful")
    # A folder holding files that are not a suite's output is never written into.
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine\n")
    with pytest.raises(
        UserError,
        match=r"^The output folder .*notes holds files that are not a `userlm test` output "
        r"\(todo.txt\); choose a new or empty folder.$",
    ):
        run_words([str(suite), "--out", str(foreign)])
    assert sorted(p.name for p in foreign.iterdir()) == ["todo.txt"]
    # --compare with a folder that holds no finished run.
    with pytest.raises(UserError, match=r"holds no finished `userlm test` run \(no results.json\)"):
        run_words([str(suite), "--out", str(tmp_path / "out"), "--compare", str(foreign)])
    # Names and thresholds are checked with the config.
    bad = tmp_path / "bad.yaml"
    bad.write_text(suite.read_text().replace("  - name: refund\n", "  - name: book\n"))
    with pytest.raises(UserError, match=r"^Two intents are named 'book'; give each intent its own name.$"):
        run_words([str(bad), "--out", str(tmp_path / "out")])
    with pytest.raises(UserError, match=r"`min_success`.* must be at most 1, not 1.5"):
        run_words([str(suite), "thresholds.min_success=1.5"])
    with pytest.raises(UserError, match=r"^Set both judge.endpoint and judge.model"):
        run_words([str(suite), "--judge.endpoint", "http://127.0.0.1:9/v1"])
    assert not (tmp_path / "out").exists()


def run_words(words: list[str]):
    from userlm.config import parse_config
    from userlm.infer.suite.config import SuiteConfig
    from userlm.infer.suite.run import run_suite

    return run_suite(parse_config(SuiteConfig, words, prog="userlm test"))


def test_judge_verdicts_are_used_and_never_asked_twice(tmp_path, simulator, bots, default_tokenizer, serve_folder):
    # A judge that answers "No" when the transcript holds " Unfortunately", "Yes" otherwise.
    judge = make_trigger_model(
        tmp_path / "judge",
        default_tokenizer,
        trigger=" Unfortunately",
        when_present="No",
        otherwise="Yes",
        flipped=False,
    )
    url = serve_folder(judge)
    out = tmp_path / "run"
    suite = write_suite(
        tmp_path,
        simulator,
        "done_but_sorry",
        f"judge:\n  endpoint: {url}\n  model: {judge}\nthresholds: {{min_success: 0.5}}\n",
    )
    code = main(["test", str(suite), "--out", str(out)])
    result = results_of(out)
    records = {r["conversation_id"]: r for r in conversations(out)}
    # Every user leaves (the bot always says "Done."), but the judge fails those told "Unfortunately".
    assert {r["termination_reason"] for r in records.values()} == {"user_ended"}
    for outcome in result["outcomes"]:
        sorry = "Please" in user_turns(records[outcome["conversation_id"]])
        assert outcome["success"] is (not sorry) and outcome["verdict"]["answer"].strip() == ("No" if sorry else "Yes")
    assert result["signal"]["kind"] == "judge" and f"{judge}" in result["signal"]["text"]
    asked = result["judge"]["asked"]
    # Identical transcripts are one request: with two openings and at most two turns there are few distinct ones.
    assert 0 < asked < 12
    assert code == (0 if result["stats"]["success_rate"] >= 0.5 else 1)
    # A rerun with the judge's port closed: every verdict comes from the cache, none is asked.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    main(["test", str(suite), "--out", str(out), f"judge.endpoint=http://127.0.0.1:{closed}/v1", "--fresh"])
    rerun = results_of(out)
    assert rerun["judge"]["asked"] == 0 and "0 asked, 12 from the cache" in rerun["signal"]["text"]
    assert [o["success"] for o in rerun["outcomes"]] == [o["success"] for o in result["outcomes"]]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_failing_judge_says_why_in_one_line_with_its_own_retries(tmp_path, simulator, bots, capsys):
    port = closed_port()
    suite = write_suite(
        tmp_path,
        simulator,
        "helpful",
        f"judge: {{endpoint: 'http://127.0.0.1:{port}/v1', model: m}}\nthresholds: {{min_success: 0.5}}\n",
    )
    assert (
        main(["test", str(suite), "--out", str(tmp_path / "run"), "--judge.max-retries", "1", "--judge.timeout", "5"])
        == 1
    )
    printed = capsys.readouterr().out
    [line] = [line for line in printed.splitlines() if line.startswith("The judge gave no verdict")]
    # The judge's own retry key, not the library default of 4; the cause on the terminal, not only in the report.
    assert line.startswith(
        f"The judge gave no verdict for 12 of 12 conversations; its last error: Could not connect to the "
        f"endpoint at 127.0.0.1:{port} after 1 retry ("
    )
    assert "FAILED suite: the success rate cannot be measured" in printed


def test_a_long_auto_named_intent_keeps_to_one_line_of_an_80_column_table(monkeypatch, capsys):
    from userlm.summary import Summary, print_summary

    monkeypatch.setenv("COLUMNS", "80")
    name = INTENTS["refund"]  # what an intent without a name is called: its first words, which can be many
    columns = ("intent", "conv.", "success", "user ended", "assistant errors", "mean user turns", "gate")
    print_summary(
        Summary(
            title="userlm test: bots",
            columns=columns,
            rows=[
                (name, 4, "50% (2/4)", "50% (2/4)", "0% (0/4)", "1.5", "pass"),
                ("all intents", 12, "50% (6/12)", "50% (6/12)", "0% (0/12)", "1.5", "pass"),
            ],
        )
    )
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80
    [row] = [line for line in lines if line.startswith("│ You are a user")]
    assert row.endswith("│     4 │  50% (2/4) │  50% (2/4) │  0% (0/4) │   1.5 │ pass │") and "…" in row


def test_a_rerun_that_reuses_every_conversation_loads_no_model(tmp_path, simulator, bots, monkeypatch, capsys):
    from userlm.infer.simulator import UserSimulator

    out = tmp_path / "run"
    suite = write_suite(tmp_path, simulator, "helpful", "thresholds: {}\n")
    assert main(["test", str(suite), "--out", str(out)]) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(UserSimulator, "load", classmethod(refuse))
    # Re-checking a threshold needs none of the models: every conversation is reused.
    assert main(["test", str(suite), "--out", str(out), "thresholds.min_user_ended=0.01"]) == 0
    assert results_of(out)["simulated"] == {"now": 0, "reused": 12, "retried": 0}
    capsys.readouterr()

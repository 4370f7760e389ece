"""`userlm extrinsic`: the sandbox a solution runs in, HumanEval's tasks and checks, the figures on
hand-computed examples, and a whole run on a tiny simulator with a Python assistant and checker."""

from __future__ import annotations

import json
import time

import pytest

from userlm.evaluation.extrinsic import humaneval
from userlm.evaluation.extrinsic.config import ExtrinsicConfig
from userlm.evaluation.extrinsic.figures import (
    intent_coverage,
    simulator_figures,
    turn_variance,
    unigram_difference,
)
from userlm.evaluation.extrinsic.run import run_extrinsic
from userlm.evaluation.extrinsic.sandbox import run_program
from userlm.flipped.format import END_MARKER


def test_the_sandbox_stops_an_infinite_loop():
    started = time.monotonic()
    result = run_program("while True:\n    pass\n", time_limit=1.0)
    assert result.status == "timed_out" and time.monotonic() - started < 10


def test_the_sandbox_refuses_writes_outside_its_folder_and_allows_them_inside(tmp_path):
    outside = tmp_path / "outside.txt"
    result = run_program(f"open({str(outside)!r}, 'w').write('escaped')\n")
    assert result.status == "failed" and "outside its folder" in result.detail and not outside.exists()
    removing = run_program(f"import os\nos.remove({str(tmp_path / 'kept.txt')!r})\n")
    assert removing.status == "failed"
    inside = run_program("open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n")
    assert inside.passed


def test_the_sandbox_refuses_the_network_and_new_processes_and_limits_memory():
    assert "refuses socket" in run_program("import socket\nsocket.create_connection(('127.0.0.1', 9))\n").detail
    assert "refuses subprocess.Popen" in run_program("import subprocess\nsubprocess.run(['true'])\n").detail
    assert run_program("x = bytearray(2 * 2**30)\n", memory_mb=256).detail == "MemoryError"
    # The error is the last line even after the program printed: the output is not reordered by buffering.
    assert run_program("print([5])\nassert False\n").detail == "AssertionError"


def turns_with(reply: str) -> list[dict]:
    return [{"role": "user", "content": "write it"}, {"role": "assistant", "content": reply}]


@pytest.mark.parametrize("index", [0, 2, 12, 38, 53, 162])
def test_humaneval_canonical_solutions_pass_its_tests(index):
    problem = humaneval.problems()[index]
    task = humaneval.task_of(problem, time_limit=10, memory_mb=1024)
    solution = problem["prompt"] + problem["canonical_solution"]
    assert humaneval.check(task, turns_with(f"Here you go:\n```python\n{solution}\n```\nEnjoy.")) == {
        "passed": True,
        "detail": "passed",
    }
    # The intent names the function and states the task, without the docstring's examples or any code.
    assert f"`{problem['entry_point']}(" in task["intent"] and ">>>" not in task["intent"]
    assert task["text"] and task["text"] in task["intent"] and "return" not in task["intent"].split(":")[0]


def test_humaneval_checks_the_last_code_block_and_fails_a_wrong_or_missing_one():
    problem = humaneval.problems()[2]  # truncate_number: the decimal part of a float
    task = humaneval.task_of(problem, time_limit=10, memory_mb=1024)
    right = "```python\ndef truncate_number(number):\n    return number % 1.0\n```"
    wrong = "```python\ndef truncate_number(number):\n    return number\n```"
    assert humaneval.check(task, [*turns_with(right), *turns_with(wrong)])["passed"] is False
    assert humaneval.check(task, [*turns_with(wrong), *turns_with(right)])["passed"] is True
    assert humaneval.check(task, turns_with("Use number % 1.0."))["detail"] == "the assistant wrote no code block"
    assert len(humaneval.problems()) == 164


def test_the_unigram_difference_and_turn_variance_on_hand_computed_examples():
    # {a, b, c} and {a, b, d}: Jaccard 2/4, difference 0.5.
    assert unigram_difference(["a b c", "A b, d"]) == pytest.approx(0.5)
    # Pairs: (abc, abd) 2/4, (abc, xyz) 0/6, (abd, xyz) 0/6; mean Jaccard 1/6, difference 5/6.
    assert unigram_difference(["a b c", "a b d", "x y z"]) == pytest.approx(5 / 6)
    assert unigram_difference(["same words", "same words"]) == 0.0
    # Sample variance: [1, 3] -> 2.0; [2, 2, 5] -> mean 3, squares 1 + 1 + 4, over 2 = 3.0.
    assert turn_variance([1, 3]) == 2.0 and turn_variance([2, 2, 5]) == 3.0 and turn_variance([4, 4]) == 0.0


def conversation(conversation_id: str, intent: str, users: list[str], *, ended: str = "user_ended") -> dict:
    turns = [t for user in users for t in ({"role": "user", "content": user}, {"role": "assistant", "content": "ok"})]
    if ended == "user_ended":
        turns.append({"role": "user", "content": END_MARKER})
    return {"conversation_id": conversation_id, "intent": intent, "turns": turns, "termination_reason": ended}


def test_the_figures_of_one_simulator_on_hand_computed_conversations():
    tasks = {
        "sort": {"task_id": "t1", "text": "Sort the numbers in descending order"},
        "sum": {"task_id": "t2", "text": "Sum the even numbers"},
    }
    records = [
        conversation(
            "a", "sort", ["sort these numbers", "descending please"]
        ),  # 2 turns; words sort numbers descending
        conversation("b", "sort", ["sort numbers"]),  # 1 turn
        conversation("c", "sum", ["sum the even numbers", "thanks", "bye now"]),  # 3 turns
        conversation("d", "sum", ["add numbers"]),  # 1 turn
        conversation("e", "sum", ["broken"], ended="assistant_error"),  # left out of every figure
    ]
    checks = {"a": {"passed": True}, "b": {"passed": False}, "c": {"passed": True}, "d": {"passed": None}}
    checks["e"] = {"passed": None}
    figures = simulator_figures(records, checks, tasks, seed=0)
    assert (figures["conversations"], figures["broken"], figures["unchecked"]) == (5, 1, 1)
    assert figures["success_rate"]["value"] == pytest.approx(200 / 3)  # a, c of a, b, c
    assert figures["user_turns"]["value"] == pytest.approx(7 / 4)
    # Task t1: turns [2, 1] -> 0.5; task t2: [3, 1] -> 2.0; mean 1.25.
    assert figures["turn_variance"]["value"] == pytest.approx(1.25)
    # Content words: t1 {sort, numbers, descending, order}, t2 {sum, even, numbers}.
    # a: 3/4, b: 2/4, c: 3/3, d: 1/3 -> mean (0.75 + 0.5 + 1 + 1/3) / 4.
    assert figures["intent_coverage"]["value"] == pytest.approx(100 * (0.75 + 0.5 + 1 + 1 / 3) / 4)
    assert intent_coverage(records[0]["turns"], "Sort the numbers in descending order") == 0.75
    # t1: {sort, these, numbers, descending, please} vs {sort, numbers}: 2/5 -> 0.6;
    # t2: {sum, the, even, numbers, thanks, bye, now} vs {add, numbers}: 1/8 -> 0.875.
    assert figures["unigram_difference"]["value"] == pytest.approx((0.6 + 0.875) / 2)
    assert figures["unigram_difference"]["units"] == 2 and figures["unigram_difference"]["unit"] == "task"


@pytest.fixture
def python_parts(tmp_path, monkeypatch):
    (tmp_path / "extrinsic_parts.py").write_text(
        "def answer(messages):\n"
        "    return 'The answer is 42.'\n\n"
        "def says_42(task, turns):\n"
        "    return task['expected'] in turns[-1]['content']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = tmp_path / "tasks.jsonl"
    lines = [
        {"task_id": "life", "intent": "find the answer to life", "text": "answer to life", "expected": "42"},
        {"task_id": "year", "intent": "find the year of the moon landing", "expected": "1969"},
    ]
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return tasks


def test_a_run_checks_the_answers_under_each_simulator_and_writes_its_report(python_parts, forced_simulator, tmp_path):
    config = ExtrinsicConfig(
        simulators=[
            {
                "name": f"says-{word}",
                "simulator": str(forced_simulator(always_end=False, word=word)),
                "guardrails": None,
                "max_new_tokens": 4,
            }
            for word in ("ok", "answer")
        ],
        tasks=str(python_parts),
        checker="python:extrinsic_parts:says_42",
        assistant="python:extrinsic_parts:answer",
        n_per_intent=2,
        max_turns=2,
        progress=False,
        out=tmp_path / "extrinsic",
    )
    result = run_extrinsic(config)
    names = list(result["simulators"])
    assert names == ["says-ok", "says-answer"]
    for name in names:
        figures = result["simulators"][name]["figures"]
        assert figures["conversations"] == 4 and figures["broken"] == 0
        assert figures["success_rate"]["value"] == 50.0  # "life" passes, "year" does not
        assert figures["user_turns"]["value"] == 2.0 and figures["turn_variance"]["value"] == 0.0
        assert figures["unigram_difference"]["value"] == 0.0  # both simulations of a task say the same
    # Coverage: "ok" reveals nothing; "answer" is one of "life"'s 2 content words, none of "year"'s 4.
    assert result["simulators"]["says-answer"]["figures"]["intent_coverage"]["value"] == pytest.approx(100 * 0.5 / 2)
    assert result["simulators"]["says-ok"]["figures"]["intent_coverage"]["value"] == 0.0
    assert result["simulators"]["says-answer"]["success_rate_minus_first"]["value"] == 0.0
    report = (config.out / "report.md").read_text()
    assert "| says-answer | 4 | 50.0" in report
    assert json.loads((config.out / "results.json").read_text())["tasks"]["task_ids"] == ["life", "year"]


def test_bad_task_files_and_folders_are_one_sentence(tmp_path, userlm_cli):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"intent": "add two numbers"}\n')
    words = ("extrinsic", "--simulators", "default", "--assistant", "hf:default", "--out", str(tmp_path / "o"))
    no_checker = userlm_cli(*words, "--tasks", str(tasks))
    assert no_checker.returncode == 2 and "names no checker" in no_checker.stderr
    missing = userlm_cli(*words, "--tasks", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "No task file" in missing.stderr and missing.stderr.count("\n") == 1
    twice = userlm_cli(*words[:-2], "--simulators", "default,default", "--out", str(tmp_path / "o"))
    assert twice.returncode == 2 and "Two simulators are named 'default'" in twice.stderr

"""Extrinsic tasks: intents whose conversations end in an answer a checker can verify.

A task is a dict with at least
    {"task_id": str, "intent": str, "text": str, "checker": "python:module:function"}
and whatever else its checker reads. `intent` is what the simulated user is given;
`text` is the task as stated, which intent coverage is measured against (default: the
intent without its prefix). The built-in set is HumanEval (`humaneval.py`); any JSONL
file of such objects works too, one per line, `checker` per line or for the whole file.

A checker is `function(task, turns) -> bool | {"passed": bool, "detail": str}`, `turns`
the conversation's turns ({"role": "user" | "assistant", "content"}, the assistant's
last ones holding its final answer). A checker that raises marks its conversation
unchecked: counted and reported, not a failure of the assistant.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from userlm.errors import UserError
from userlm.evaluation.metrics import intent_without_prefix
from userlm.flipped.samples import open_lines
from userlm.flipped.words import content_words

from . import humaneval

HUMANEVAL = "humaneval"


def load_tasks(
    source: str | Path, *, limit: int | None, checker: str | None, time_limit: float, memory_mb: int
) -> list[dict]:
    """The first `limit` tasks of HumanEval (`source` "humaneval") or of a JSONL file."""
    if str(source) == HUMANEVAL:
        tasks = [humaneval.task_of(p, time_limit=time_limit, memory_mb=memory_mb) for p in humaneval.problems()]
    else:
        tasks = read_task_file(Path(source), checker)
    tasks = tasks[:limit] if limit is not None else tasks
    intents = [t["intent"] for t in tasks]
    if len(set(intents)) < len(intents):
        repeated = next(t["task_id"] for k, t in enumerate(tasks) if t["intent"] in intents[:k])
        raise UserError(f"Task {repeated!r} has the intent of an earlier task; give every task its own intent.")
    return tasks


def read_task_file(path: Path, checker: str | None) -> list[dict]:
    if not path.is_file():
        raise UserError(f"No task file at {path}; pass `humaneval` or a JSONL file of tasks.")
    tasks = []
    try:
        for number, line in open_lines(path):
            if not line.strip():
                continue
            try:
                task = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"Line {number} of {path} is not JSON; write one task object per line.") from None
            if not isinstance(task, dict) or not isinstance(task.get("intent"), str) or not task["intent"].strip():
                raise UserError(f"Line {number} of {path} has no 'intent' text; give each task an intent.")
            task.setdefault("checker", checker)
            if not isinstance(task["checker"], str) or not task["checker"].startswith("python:"):
                raise UserError(
                    f"Line {number} of {path} names no checker; give it 'checker': 'python:module:function' "
                    "or set the checker key for the whole file."
                )
            task.setdefault("task_id", f"line-{number}")
            task["task_id"] = str(task["task_id"])
            task.setdefault("text", intent_without_prefix(task["intent"]))
            if not isinstance(task["text"], str) or not content_words(task["text"]):
                raise UserError(
                    f"Line {number} of {path} has a task text without content words; intent coverage needs one."
                )
            tasks.append(task)
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise UserError(f"{path} is not a readable UTF-8 JSONL file ({error.__class__.__name__}).") from None
    if not tasks:
        raise UserError(f"{path} holds no tasks; write one JSON object with an 'intent' per line.")
    return tasks


def import_checker(spec: str):
    """The function a `python:module:function` spec names."""
    module_name, _, function_name = spec[len("python:") :].partition(":")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError):
        raise UserError(
            f"Could not import the checker {spec!r}; check python:MODULE:FUNCTION and PYTHONPATH."
        ) from None


def run_check(task: dict, turns: list[dict]) -> dict:
    """{"passed": bool | None, "detail": str}; None when the checker itself failed."""
    try:
        verdict = import_checker(task["checker"])(task, turns)
    except UserError:
        raise
    except Exception as error:  # the checker's own failure: this conversation is unchecked, the run goes on
        return {"passed": None, "detail": f"the checker failed: {type(error).__name__}: {error}"}
    if isinstance(verdict, dict):
        return {"passed": bool(verdict.get("passed")), "detail": str(verdict.get("detail", ""))}
    return {"passed": bool(verdict), "detail": ""}

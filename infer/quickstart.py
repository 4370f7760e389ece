"""The quickstart's simulation step: the freshly trained simulator against the SmolLM2 default."""

from __future__ import annotations

import json
from pathlib import Path

from .assistants import LocalAssistant
from .guardrails import Guardrails
from .simulate import make_jobs, print_summary, print_transcript, simulate
from .simulator import UserSimulator

QUICKSTART_INTENTS = [
    "You are a user chatting with an assistant language model to get a simple weeknight dinner recipe.",
    "You are a user chatting with an assistant language model to fix an error in a short Python script.",
    "You are a user chatting with an assistant language model to plan a weekend trip to a nearby city.",
    "You are a user chatting with an assistant language model to write a polite email asking for a deadline extension.",
    "You are a user chatting with an assistant language model to understand how compound interest works.",
    "You are a user chatting with an assistant language model to pick a first programming language to learn.",
    "You are a user chatting with an assistant language model to get ideas for a child's birthday party.",
    "You are a user chatting with an assistant language model to improve their sleep habits.",
]


def quickstart_simulate(simulator_dir: Path, out_file: Path, *, max_turns: int = 3) -> dict:
    """Simulate 8 guarded conversations with the simulator at `simulator_dir` (e.g. a `userlm
    train` LoRA folder on the SmolLM2 default) against SmolLM2 as the assistant; print one
    transcript and the summary, and return the summary."""
    simulator = UserSimulator.load(simulator_dir)
    assistant = LocalAssistant("default", max_tokens=48)
    jobs = make_jobs(QUICKSTART_INTENTS, [None], n_per_intent=1, seed=0)
    summary = simulate(
        simulator, assistant, jobs, Path(out_file), max_turns=max_turns, guardrails=Guardrails(),
        batch_size=len(jobs), max_new_tokens=48,
    )
    records = [json.loads(line) for line in Path(out_file).read_text().splitlines()]
    print_transcript(max(records, key=lambda r: len(r["turns"])))
    print_summary(summary)
    return summary

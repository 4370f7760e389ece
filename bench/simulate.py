"""Benchmark: conversations per minute of the batched local simulator against the model
card's sequential loop, and the cost of the guardrails, all in one run.

    python bench/simulate.py [--conversations 16] [--turns 4] [--user-tokens 24] [--assistant-tokens 24] [--threads N]
    python bench/simulate.py conversations=8 turns=2          # the same keys as key=value words

SmolLM2 (the embedded default) plays the user (prompted, chatml flipped template) and the
assistant. Three runs of the same conversations:
- sequential: one conversation at a time, one `generate` call per turn, as in UserLM-8b's
  model card example (the baseline);
- batched: `userlm simulate`'s loop, every active conversation's user turn in one
  `generate` and every assistant reply in another, unguarded;
- batched + guardrails: the same with the default guardrails.
Targets: batched at least 4x sequential; guarded at most 1.3x the time of unguarded.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from userlm.config import Config, parse_config
from userlm.flipped.format import system_text
from userlm.flipped.templates import render
from userlm.infer.assistants import LocalAssistant
from userlm.infer.guardrails import Guardrails
from userlm.infer.simulate import make_jobs, simulate
from userlm.infer.simulator import UserSimulator
from userlm.infer.turn_sampling import TurnSampling

GOALS = [
    "plan a vegetarian dinner party",
    "debug a failing unit test",
    "choose a laptop for travel",
    "learn the basics of chess",
    "write a cover letter",
    "understand how vaccines work",
    "budget for a wedding",
    "fix a leaking tap",
    "improve a slow SQL query",
    "train for a first 10k run",
    "pick a houseplant for a dark room",
    "translate a menu",
    "prepare for a job interview",
    "set up a home Wi-Fi network",
    "write a birthday poem",
    "learn about black holes",
]


@dataclass(kw_only=True)
class BenchConfig(Config):
    conversations: int = field(default=16, metadata={"help": "conversations per run", "min": 1})
    turns: int = field(default=4, metadata={"help": "user turns per conversation", "min": 1})
    user_tokens: int = field(default=24, metadata={"help": "max new tokens per user turn", "min": 1})
    assistant_tokens: int = field(default=24, metadata={"help": "max new tokens per assistant reply", "min": 1})
    threads: int | None = field(
        default=None,
        metadata={"help": "torch CPU threads (on a shared, oversubscribed CPU, 1 is often fastest)", "min": 1},
    )


def intents(n: int) -> list[str]:
    return [f"You are a user chatting with an assistant language model to {GOALS[i % len(GOALS)]}." for i in range(n)]


@torch.no_grad()
def sequential(
    simulator: UserSimulator, assistant: LocalAssistant, goals: list[str], turns: int, user_tokens: int
) -> int:
    """The model card's loop: one conversation at a time, one `generate` per turn. Returns tokens generated."""
    tokenizer, model = simulator.tokenizer, simulator.model
    eot = tokenizer.convert_tokens_to_ids(simulator.template.eot_token)
    generated = 0
    for intent in tqdm(goals, desc="sequential", unit="conv"):
        messages = [{"role": "system", "content": system_text(intent)}]
        for _ in range(turns):
            text = render(tokenizer, simulator.template, messages)
            inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
            output = model.generate(
                **inputs,
                do_sample=True,
                top_p=0.8,
                temperature=1.0,
                sampling=TurnSampling(max_new_tokens=user_tokens),
                eos_token_id=eot,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = output[0, inputs["input_ids"].shape[1] :]
            generated += len(new)
            messages.append({"role": "user", "content": tokenizer.decode(new, skip_special_tokens=True).strip()})
            [reply] = assistant.generate([messages[1:]])
            generated += len(assistant.tokenizer(reply, add_special_tokens=False)["input_ids"])
            messages.append({"role": "assistant", "content": reply})
    return generated


def batched(simulator, assistant, goals, turns, user_tokens, guardrails) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        return simulate(
            simulator,
            assistant,
            make_jobs(goals, [None], 1, seed=0),
            Path(folder) / "bench.jsonl",
            max_turns=turns,
            guardrails=guardrails,
            batch_size=len(goals),
            max_new_tokens=user_tokens,
        )


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    config = parse_config(
        BenchConfig, sys.argv[1:], prog="python bench/simulate.py", description=__doc__.split("\n\n")[0]
    )
    if config.threads:
        torch.set_num_threads(config.threads)

    torch.manual_seed(0)
    simulator = UserSimulator.load("default")
    assistant = LocalAssistant("default", max_tokens=config.assistant_tokens)
    goals = intents(config.conversations)
    simulator.generate(
        [[{"role": "system", "content": goals[0]}]], guardrails=Guardrails(), max_new_tokens=2
    )  # warm-up, token tables

    seq_time, seq_tokens = timed(sequential, simulator, assistant, goals, config.turns, config.user_tokens)
    plain_time, plain = timed(batched, simulator, assistant, goals, config.turns, config.user_tokens, None)
    guarded_time, guarded = timed(batched, simulator, assistant, goals, config.turns, config.user_tokens, Guardrails())

    def per_minute(seconds: float) -> float:
        return config.conversations / seconds * 60

    print(
        f"\n{config.conversations} conversations x {config.turns} user turns, SmolLM2-135M as simulator and assistant, "
        f"{config.user_tokens}/{config.assistant_tokens} max new tokens per user/assistant turn, "
        f"{torch.get_num_threads()} torch threads, device {simulator.model.device}"
    )
    print(f"{'run':<22}{'seconds':>9}{'conv/min':>10}{'user turns':>12}")
    print(
        f"{'sequential (card)':<22}{seq_time:>9.1f}{per_minute(seq_time):>10.2f}"
        f"{config.conversations * config.turns:>12}"
    )
    print(f"{'batched':<22}{plain_time:>9.1f}{per_minute(plain_time):>10.2f}{plain['user_turns']:>12}")
    print(
        f"{'batched + guardrails':<22}{guarded_time:>9.1f}{per_minute(guarded_time):>10.2f}{guarded['user_turns']:>12}"
    )
    print(f"batched / sequential speed-up: {seq_time / plain_time:.2f}x (target >= 4x)")
    print(
        f"guardrail cost (guarded / unguarded time): {guarded_time / plain_time:.2f}x (target <= 1.3x); "
        f"guardrail events {guarded['guardrail_events']}, terminations {guarded['termination_reasons']}"
    )
    print(f"sequential loop generated {seq_tokens} tokens ({seq_tokens / seq_time:.1f} tokens/s)")


if __name__ == "__main__":
    main()

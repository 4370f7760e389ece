"""Benchmark: user turns per second and latency of `userlm serve` (guardrails on, dynamic
batching) against `transformers serve` of the same checkpoint (no guardrails, its own
batching), in one run.

    python bench/serve.py [--clients 16] [--turns 4] [--max-tokens 32]
    python bench/serve.py clients=8 turns=2          # the same keys as key=value words

Every server serves the embedded SmolLM2 on loopback, started here and measured alone (each
is stopped before the next starts, so none competes for the CPU): userlm serve, then
transformers serve as it starts by default (without continuous batching), then transformers
serve with its own batching (`--continuous-batching`, paged attention). Each of `clients`
concurrent clients holds a conversation of `turns` user turns: it asks the server for the
next user turn, then appends a fixed assistant reply (no assistant model, so only the
simulator is measured), with the same sampling settings and token limit on every server.
userlm serve answers with the flipped template and the default guardrails (drafts they
reject are resampled, which costs generation); transformers serve answers with SmolLM2's
own chat template. Target: userlm serve at least 3x transformers serve's turns per second.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from userlm.config import Config, parse_config

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
ASSISTANT_REPLY = "Sure, I can help with that. Could you tell me a bit more about what you need?"


@dataclass(kw_only=True)
class BenchConfig(Config):
    clients: int = field(default=16, metadata={"help": "concurrent clients, one conversation each", "min": 1})
    turns: int = field(default=4, metadata={"help": "user turns per conversation", "min": 1})
    max_tokens: int = field(default=32, metadata={"help": "max tokens per user turn, on both servers", "min": 1})


@dataclass
class Result:
    name: str
    seconds: float
    latencies: list[float]
    extra: dict

    @property
    def turns_per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{command[0]} exited before answering; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    sys.exit(f"{command[0]} did not answer within 300 s; see {log}")


async def converse(
    client: httpx.AsyncClient, url: str, model: str, goal: str, seed: int, config: BenchConfig
) -> list[float]:
    """One client's conversation: `turns` user turns, each timed; returns the latencies."""
    messages = [{"role": "system", "content": f"You are a user chatting with an assistant language model to {goal}."}]
    latencies = []
    for turn in range(config.turns):
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": config.max_tokens,
            "temperature": 1.0,
            "top_p": 0.8,
            "seed": seed + turn,
        }
        began = time.perf_counter()
        response = await client.post(url, json=body)
        latencies.append(time.perf_counter() - began)
        response.raise_for_status()
        choice = response.json()["choices"][0]
        if choice.get("userlm", {}).get("ended"):
            break  # the simulated user left (the guardrails allow it after two turns)
        messages += [
            {"role": "user", "content": choice["message"]["content"]},
            {"role": "assistant", "content": ASSISTANT_REPLY},
        ]
    return latencies


async def measure(name: str, base: str, model: str, config: BenchConfig) -> Result:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=config.clients)) as client:
        began = time.perf_counter()
        runs = await asyncio.gather(
            *(
                converse(client, f"{base}/v1/chat/completions", model, GOALS[i % len(GOALS)], 1000 * i, config)
                for i in range(config.clients)
            )
        )
        seconds = time.perf_counter() - began
        health = (await client.get(f"{base}/health")).json()
    extra = {
        k: v
        for k, v in health.items()
        if k in ("generate_calls", "rows", "largest_batch", "prompt_tokens", "reused_prompt_tokens")
    }
    return Result(name, seconds, [latency for run in runs for latency in run], extra)


def main(argv: list[str]) -> int:
    config = parse_config(BenchConfig, argv, prog="bench/serve.py", description=__doc__.split("\n\n")[0])
    from userlm.defaults import default_model_dir

    folder = default_model_dir()
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    transformers = [
        str(Path(sys.executable).parent / "transformers"),
        "serve",
        str(folder),
        "--host",
        "127.0.0.1",
        "--device",
        "cpu",
        "--default-seed",
        "0",
    ]
    servers = [
        (
            "userlm serve (guardrails on)",
            [sys.executable, "-m", "userlm.cli", "serve", "default", "--log-level", "warning"],
            "default",
        ),
        ("transformers serve", transformers, str(folder)),
        ("transformers serve --continuous-batching", [*transformers, "--continuous-batching"], str(folder)),
    ]
    results = [
        run_one(name, command, model, config, logs / f"server-{i}.log")
        for i, (name, command, model) in enumerate(servers)
    ]
    print(
        f"{config.clients} concurrent clients x {config.turns} user turns, "
        f"max_tokens {config.max_tokens}, SmolLM2-135M on CPU "
        f"({os.cpu_count()} cores); server logs in {logs}\n"
    )
    print("| server | user turns | seconds | user turns/s | p50 latency s | p95 latency s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.name} | {len(r.latencies)} | {r.seconds:.1f} | {r.turns_per_second:.2f} | "
            f"{r.percentile(50):.2f} | {r.percentile(95):.2f} |"
        )
    ours = results[0].turns_per_second
    for theirs in results[1:]:
        print(f"\nuserlm serve / {theirs.name}: {ours / theirs.turns_per_second:.2f}x throughput (target >= 3x)")
    print(f"userlm serve batching: {results[0].extra}")
    return 0


def run_one(name: str, command: list[str], model: str, config: BenchConfig, log: Path) -> Result:
    """Start one server, warm it up with one short request (first-call allocations), measure it, stop it."""
    port = free_port()
    process = start([*command, "--port", str(port)], port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(measure("warm-up", base, model, BenchConfig(clients=1, turns=1, max_tokens=4)))
        return asyncio.run(measure(name, base, model, config))
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

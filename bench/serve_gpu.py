"""GPU serve benchmark: `userlm serve` (local backend, bf16) on a Llama-3.1-8B-shaped model at
64 concurrent conversations, against `transformers serve --continuous-batching` of the same
folder, in one run.

    python bench/serve_gpu.py --model out/bench-gpu/llama31-8b-random [--clients 64] [--turns 4]

The folder is the random-weight model `bench/train_gpu.py` builds (no weights can be fetched).
Random weights write noise, so the guardrails reject most drafts and every rejected draft is
redrawn: userlm serve is measured with the guardrails on (the redraws are work it really
does) and off (generation and batching alone). The figures measure the serving path at 8B
size, not a trained simulator's acceptance rate. Clients, timing and the table are
bench/serve.py's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from serve import BenchConfig, run_one

from userlm.config import parse_config


@dataclass(kw_only=True)
class GpuBenchConfig(BenchConfig):
    model: Path = field(metadata={"help": "a Llama-3.1-8B-shaped model folder (bench/train_gpu.py builds one)"})
    clients: int = field(default=64, metadata={"help": "concurrent clients, one conversation each", "min": 1})
    servers: list[Literal["userlm", "userlm-unguarded", "transformers-cb"]] = field(
        default_factory=lambda: ["userlm", "userlm-unguarded", "transformers-cb"],
        metadata={
            "nonempty": True,
            "help": "which to measure: userlm serve with and without "
            "guardrails, transformers serve --continuous-batching",
        },
    )


def main(argv: list[str]) -> int:
    config = parse_config(GpuBenchConfig, argv, prog="bench/serve_gpu.py", description=__doc__.split("\n\n")[0])
    folder = str(config.model)
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-gpu-"))
    userlm = [
        sys.executable,
        "-m",
        "userlm.cli",
        "serve",
        folder,
        "--template",
        "userlm-llama3",
        "--max-batch-size",
        str(config.clients),
        "--log-level",
        "warning",
    ]
    commands = {
        "userlm": ("userlm serve (guardrails on)", userlm),
        "userlm-unguarded": ("userlm serve --no-guardrails", [*userlm, "--no-guardrails"]),
        "transformers-cb": (
            "transformers serve --continuous-batching",
            [
                str(Path(sys.executable).parent / "transformers"),
                "serve",
                folder,
                "--host",
                "127.0.0.1",
                "--device",
                "cuda",
                "--dtype",
                "bfloat16",
                "--continuous-batching",
                "--default-seed",
                "0",
            ],
        ),
    }
    servers = [(*commands[key], folder) for key in config.servers]
    results = []
    for i, (name, command, model) in enumerate(servers):
        try:
            results.append(run_one(name, command, model, config, logs / f"server-{i}.log"))
        except (SystemExit, httpx.HTTPError, OSError) as error:  # one server failing must not lose the others' figures
            print(f"{name}: not measured ({error}); see {logs / f'server-{i}.log'}")
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"\n{config.clients} concurrent clients x {config.turns} user turns, max_tokens {config.max_tokens}, "
        f"{config.model.name} (bf16) on {device}; server logs in {logs}\n"
    )
    print("| server | user turns | seconds | user turns/s | p50 latency s | p95 latency s | batching |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        print(
            f"| {r.name} | {len(r.latencies)} | {r.seconds:.1f} | {r.turns_per_second:.2f} | {r.percentile(50):.2f} "
            f"| {r.percentile(95):.2f} | {r.extra or ''} |"
        )
    return 0 if len(results) == len(servers) else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))

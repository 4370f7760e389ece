"""How `userlm serve` turns requests into generation: dynamic batching of a local model, or
concurrent requests to an upstream completions server.

Local: every request's rows (its prompts, n copies each) wait in one queue. A single
worker takes everything queued, groups the rows by their sampling settings, and runs each
group through one `generate_each` call in a thread (so the event loop keeps accepting
requests); whatever arrived meanwhile forms the next batch. So sixteen clients cost about
one batched call per turn, not sixteen. Rows are seeded one by one (`infer/sampling.py`),
so a row's text does not depend on which other requests shared its batch. The simulator
keeps prompts' KV caches across calls (`infer/prompt_cache.py`), so a conversation's next
turn prefills only what its previous prompt lacked. A request whose client went away
before its batch started is dropped from it.

Upstream: the completions backend already sends one request per row, concurrently, and the
upstream server (vLLM) batches them itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import Counter
from dataclasses import dataclass

from userlm.config import to_dict

from ..guardrails import Guardrails
from ..simulator import GeneratedTurn
from ..turn_sampling import TurnSampling

log = logging.getLogger("userlm.serve")
# Most gaps of `wait_s` a batch waits for more requests, so that a steady stream still starts.
MAX_WAITS = 20
# What /health counts, each 0 from the start, so a monitor sees every counter before the first request.
BATCHING_STATS = (
    "generate_calls",
    "rows",
    "largest_batch",
    "abandoned_requests",
    "prompt_tokens",
    "reused_prompt_tokens",
)


@dataclass(frozen=True)
class Sampling:
    """One request's generation settings; rows with equal settings share a generate call."""

    guardrails: Guardrails | None
    turn: TurnSampling
    stop: tuple[str, ...] = ()

    def key(self) -> str:
        return json.dumps([to_dict(self.guardrails), dataclasses.asdict(self.turn), self.stop])

    def options(self) -> dict:
        return {"guardrails": self.guardrails, "sampling": self.turn, "stop": self.stop}


@dataclass
class _Job:
    prompts: list[list[dict]]
    seeds: list[int]
    sampling: Sampling
    future: asyncio.Future


class BatchingEngine:
    """Dynamic batching over a local `UserSimulator`; `stats` counts what it did (shown by /health)."""

    def __init__(self, simulator, *, max_batch_size: int = 32, wait_s: float = 0.01):
        self.simulator = simulator
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.stats: Counter = Counter(dict.fromkeys(BATCHING_STATS, 0))
        self._jobs: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def generate(
        self, prompts: list[list[dict]], seeds: list[int], sampling: Sampling
    ) -> list[GeneratedTurn | Exception]:
        job = _Job(prompts, seeds, sampling, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._wake.set()
        # Cancelling this (the client left) cancels the future: the worker then skips the job.
        return await job.future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._gather_arrivals()
            self._wake.clear()
            jobs, self._jobs = self._jobs, []
            live = [job for job in jobs if not job.future.done()]
            self.stats["abandoned_requests"] += len(jobs) - len(live)
            groups: dict[str, list[_Job]] = {}
            for job in live:
                groups.setdefault(job.sampling.key(), []).append(job)
            for group in groups.values():
                for batch in _batches(group, self.max_batch_size):
                    await self._generate(batch)

    async def _gather_arrivals(self) -> None:
        """Let requests sent together arrive together: wait until none has come for `wait_s`
        (a lone request waits only that), the queue fills a batch, or `MAX_WAITS` gaps have passed.
        A fixed short wait split a busy server's turn in two: requests answered by one call come
        back one by one, and the ones a wait missed then waited a whole generate call more."""
        queued = -1
        for _ in range(MAX_WAITS):
            rows = sum(len(job.prompts) for job in self._jobs)
            if rows == queued or rows >= self.max_batch_size:
                return
            queued = rows
            await asyncio.sleep(self.wait_s)

    async def _generate(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]
        if not jobs:
            return
        prompts = [p for job in jobs for p in job.prompts]
        seeds = [s for job in jobs for s in job.seeds]
        self.stats["generate_calls"] += 1
        self.stats["rows"] += len(prompts)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(prompts))
        try:
            turns = await asyncio.to_thread(
                self.simulator.generate_each, prompts, seed=seeds, **jobs[0].sampling.options()
            )
        except Exception as error:  # the whole call failed: every request in it gets the error
            log.exception("generation failed")
            turns = [error] * len(prompts)
        cache = getattr(self.simulator, "prompt_cache", None)
        if cache is not None:  # prompt tokens read, and how many of them a kept cache already held
            self.stats["prompt_tokens"] = cache.stats["prompt_tokens"]
            self.stats["reused_prompt_tokens"] = cache.stats["reused_tokens"]
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(turns[start : start + len(job.prompts)])
            start += len(job.prompts)


def _batches(jobs: list[_Job], max_rows: int) -> list[list[_Job]]:
    """Consecutive jobs packed into batches of at most `max_rows` rows (a larger job goes alone)."""
    batches: list[list[_Job]] = []
    rows = 0
    for job in jobs:
        if batches and rows + len(job.prompts) <= max_rows:
            batches[-1].append(job)
            rows += len(job.prompts)
        else:
            batches.append([job])
            rows = len(job.prompts)
    return batches


class UpstreamEngine:
    """The completions backend in front of an upstream server, which batches by itself."""

    def __init__(self, simulator):
        self.simulator = simulator
        self.stats: Counter = Counter(rows=0)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.simulator.aclose()

    async def generate(
        self, prompts: list[list[dict]], seeds: list[int], sampling: Sampling
    ) -> list[GeneratedTurn | Exception]:
        self.stats["rows"] += len(prompts)
        return await self.simulator.agenerate(prompts, seed=seeds, **sampling.options())

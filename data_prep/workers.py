"""Running a stage's jobs on every core, and showing how fast and how big it is.

`Workers.run` hands a stage's jobs to `num_proc` worker processes (the stdlib's
ProcessPoolExecutor, started when a stage first has more than one job, so a small input
costs no process start-up, and then kept for the next stages), holding at most two jobs a
worker in flight: the planner may carry a chunk's data, and an unbounded queue would hold
the whole input. Each result comes back to the caller as its job finishes; outputs never
depend on that order, since every job writes its own files and the assembly goes in chunk
order.

`Progress` is a tqdm bar counting conversations (so its rate is conversations per second)
with the memory of this process and its workers (resident, from psutil, which accelerate
already depends on).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from tqdm.auto import tqdm


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _ignore_interrupts() -> None:
    # Ctrl-C stops the main process, which stops the pool; workers printing their own
    # KeyboardInterrupt tracebacks would only bury the one line that matters.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Workers:
    """`num_proc` worker processes shared by every stage of a run (started on first need:
    starting one costs a second or two of imports)."""

    def __init__(self, num_proc: int):
        self.num_proc = num_proc
        self._pool: ProcessPoolExecutor | None = None

    def run(
        self, function: Callable, jobs: Iterable[tuple], on_done: Callable[[object], None], *, parallel: bool = True
    ) -> None:
        """`on_done(function(*job))` for every job, in the workers when there are several."""
        jobs = iter(jobs)
        head = list(itertools.islice(jobs, 2))
        if not parallel or self.num_proc <= 1 or len(head) < 2:
            for job in itertools.chain(head, jobs):
                on_done(function(*job))
            return
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork would copy the planner's buffers and threads
            self._pool = ProcessPoolExecutor(
                max_workers=self.num_proc, mp_context=context, initializer=_ignore_interrupts
            )
        pending = set()
        for job in itertools.chain(head, jobs):
            pending.add(self._pool.submit(function, *job))
            if len(pending) >= 2 * self.num_proc:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_done(future.result())
        for future in wait(pending)[0]:
            on_done(future.result())

    def close(self, *, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.close(cancel=exc_type is not None)


def memory_in_use() -> int:
    """Resident bytes of this process and all of its children."""
    import psutil

    process = psutil.Process()
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # it just exited
            pass
    return total


class Progress:
    """A bar of conversations for one stage, with the memory in use beside its rate."""

    def __init__(self, desc: str, total: int | None, enabled: bool):
        self.bar = tqdm(desc=desc, total=total, unit=" conv", unit_scale=True, disable=not enabled)
        self.enabled = enabled

    def update(self, conversations: int) -> None:
        if self.enabled:
            self.bar.set_postfix_str(f"memory {memory_in_use() / 2**30:.2f} GB", refresh=False)
            self.bar.update(conversations)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

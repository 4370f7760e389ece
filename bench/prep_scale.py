"""`userlm prep` at WildChat scale: time, peak memory and output size against the input, and the
speed-up of two worker processes over one, measured in the same run.

Builds WildChat-shaped corpora (`prep_corpus.py`: 1 to 4 user turns, about 4 KB of JSON each,
every record surviving the duplicate filters) of 100,000 and 1,000,000 conversations from the
bundled ShareGPT turns, then runs the real console script on each with heuristic intents.
Peak memory is the largest sum of the resident memory of `userlm prep` and its workers,
sampled every 0.2 s (a process tree has no single ru_maxrss that adds its members up).

    python bench/prep_scale.py                                 # 100k with 1 and 2 workers, then 1M with 2
    python bench/prep_scale.py --sizes 100000 --work out/bench/prep-scale

Targets (issue 12): 1,000,000 conversations in at most 6 minutes and 3 GB on a 2-core
machine, the output at most twice the input, two workers at least 1.6x faster than one.
Corpora are kept in --work and reused; outputs are deleted after they are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from prep_corpus import write_corpus  # noqa: E402


def tree_memory(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def run_prep(corpus: Path, out: Path, num_proc: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    userlm = Path(sys.executable).parent / "userlm"
    command = [str(userlm), "prep", str(corpus), "--out", str(out), "--num-proc", str(num_proc), "--no-progress"]
    busy_before, started = busy_cpu_seconds(), time.perf_counter()
    child = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    watched, peak = psutil.Process(child.pid), 0
    while True:
        finished, status, usage = os.wait4(child.pid, os.WNOHANG)
        if finished:
            break
        peak = max(peak, tree_memory(watched))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    # What else ran meanwhile: the machine's busy CPU time less ours (prep and its workers).
    others = busy_cpu_seconds() - busy_before - usage.ru_utime - usage.ru_stime
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed ({os.waitstatus_to_exitcode(status)}): {child.stderr.read()}")
    stats = json.loads((out / "stats.json").read_text())
    measured = {
        "conversations": stats["read"],
        "kept": stats["kept"],
        "num_proc": num_proc,
        "seconds": round(seconds, 1),
        "conversations_per_s": round(stats["read"] / seconds),
        "peak_memory_gb": round(peak / 2**30, 2),
        "input_gb": round(corpus.stat().st_size / 1e9, 2),
        "output_gb": round(folder_size(out) / 1e9, 2),
        "output_to_input": round(folder_size(out) / corpus.stat().st_size, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "other_processes_cpu_seconds": round(max(others, 0.0), 1),
        "stage_seconds": stats["run"]["stage_seconds"],
        "filtered": stats["filtered"],
    }
    shutil.rmtree(out, ignore_errors=True)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="corpus sizes, comma-separated")
    parser.add_argument(
        "--work", type=Path, default=Path("out/bench/prep-scale"), help="folder for corpora and outputs"
    )
    parser.add_argument(
        "--baseline-on",
        type=int,
        default=None,
        help="the corpus size also run with one worker (default: the smallest; a size not in --sizes: none)",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GB memory", flush=True)
    results = []
    for size in sizes:
        started = time.perf_counter()
        corpus = write_corpus(size, args.work / f"wildchat-{size}.jsonl")
        print(f"corpus of {size} conversations: {corpus} ({time.perf_counter() - started:.0f} s)", flush=True)
        runs = (1, 2) if size == (args.baseline_on or min(sizes)) else (2,)  # the one-worker baseline
        for num_proc in runs:
            measured = run_prep(corpus, args.work / "out", num_proc)
            results.append(measured)
            print(json.dumps(measured), flush=True)
    print(
        f"\n{'conversations':>13} {'workers':>7} {'seconds':>8} {'conv/s':>7} {'peak GB':>8} {'input GB':>9} "
        f"{'output GB':>9} {'out/in':>6} {'others CPU s':>12}"
    )
    for r in results:
        print(
            f"{r['conversations']:>13,} {r['num_proc']:>7} {r['seconds']:>8} {r['conversations_per_s']:>7,} "
            f"{r['peak_memory_gb']:>8} {r['input_gb']:>9} {r['output_gb']:>9} {r['output_to_input']:>6} "
            f"{r['other_processes_cpu_seconds']:>12}"
        )
    print("(others CPU s: CPU time other processes on the machine used during the run; near 0 on an idle machine)")
    for one in (r for r in results if r["num_proc"] == 1):
        two = next(r for r in results if r["num_proc"] == 2 and r["conversations"] == one["conversations"])
        print(
            f"two workers over one on {one['conversations']:,} conversations: {one['seconds'] / two['seconds']:.2f}x "
            "(target >= 1.6x)"
        )
    largest = max(results, key=lambda r: (r["conversations"], r["num_proc"]))
    print(
        f"{largest['conversations']:,} conversations: {largest['seconds'] / 60:.1f} min (target <= 6), "
        f"{largest['peak_memory_gb']} GB peak (target <= 3), output "
        f"{largest['output_to_input']}x the input (target <= 2)"
    )


if __name__ == "__main__":
    main()

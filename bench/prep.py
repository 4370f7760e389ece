"""Benchmark `userlm prep` on the whole bundled ShareGPT file against a baseline in the same run.

The baseline only stream-parses the file and tokenises all of its text with the default
model's fast tokenizer (batched): the least any preparation of this data must do. Each
side runs in its own subprocess, so its peak memory (ru_maxrss from wait4) is its own.

    python bench/prep.py            # both, then the ratio
    python bench/prep.py baseline   # the baseline alone (what the subprocess runs)

Target: prep at most 3x the baseline's time, and under 2 minutes for the whole file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 512


def baseline() -> None:
    from transformers import AutoTokenizer

    from userlm.data_prep.reading import Rejection, read_file
    from userlm.defaults import default_model_dir, sharegpt_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    conversations = tokens = 0
    batch: list[str] = []
    for _, record in read_file(sharegpt_path()):
        if isinstance(record, Rejection):
            continue
        conversations += 1
        batch.extend(turn.get("value") or "" for turn in record.get("conversations", []))
        if len(batch) >= BATCH:
            tokens += sum(map(len, tokenizer(batch, add_special_tokens=False)["input_ids"]))
            batch = []
    if batch:
        tokens += sum(map(len, tokenizer(batch, add_special_tokens=False)["input_ids"]))
    print(f"baseline: {conversations} conversations, {tokens} tokens", file=sys.stderr)


def measure(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {os.waitstatus_to_exitcode(status)}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    from userlm.defaults import sharegpt_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    userlm = Path(sys.executable).parent / "userlm"
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as out:
        base_s, base_mb = measure([sys.executable, __file__, "baseline"])
        prep_s, prep_mb = measure(
            [str(userlm), "prep", str(sharegpt_path()), "--out", out, "--intents", "heuristic", "--no-progress"]
        )
        import json

        stats = json.loads((Path(out) / "stats.json").read_text())
    read = stats["read"]
    print(f"userlm prep of {sharegpt_path().name}: {read} records read, {stats['kept']} kept")
    print(f"{'':10} {'seconds':>8} {'conv/s':>8} {'peak MiB':>9}")
    print(f"{'baseline':10} {base_s:8.1f} {read / base_s:8.0f} {base_mb:9.0f}")
    print(f"{'prep':10} {prep_s:8.1f} {read / prep_s:8.0f} {prep_mb:9.0f}")
    ratio = prep_s / base_s
    print(f"prep / baseline time: {ratio:.2f}x (target <= 3x); memory {prep_mb / base_mb:.2f}x")
    print(f"whole file in {prep_s:.0f} s (target < 120 s) on {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    if sys.argv[1:] == ["baseline"]:
        baseline()
    else:
        main()

"""Prep streams: a corpus larger than the memory the process may use still prepares.

A child process imports prep, then caps its own address space (`resource.setrlimit`,
RLIMIT_AS) at what it uses plus MARGIN, and prepares a WildChat-shaped corpus of more than
MARGIN bytes: a prep that held the corpus (or its records) would fail with MemoryError.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from prep_corpus import records  # noqa: E402

MARGIN = 160 << 20

CAPPED = """
import json, resource, sys
from pathlib import Path
from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep
from userlm.data_prep.dedup import dedup_keys
import userlm.data_prep.emit, userlm.data_prep.scan, sqlite3

dedup_keys(0.9)  # imports datasketch and scipy, which hang when imported under an address-space cap

def address_space() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

cap = address_space() + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
if sys.argv[4] == "hold":  # the control: what holding the corpus's lines needs
    lines = [line for line in open(sys.argv[1], encoding="utf-8")]
result = prep(PrepConfig(inputs=[Path(sys.argv[1])], out=Path(sys.argv[2]), num_proc=1, chunk_mb=4, progress=False))
print(json.dumps({"kept": result.stats["kept"], "read": result.stats["read"]}))
"""


def long_corpus(path: Path, count: int) -> Path:
    """WildChat-shaped records whose assistant turns are long (about 45 KB a record)."""
    with open(path, "w", encoding="utf-8") as sink:
        for record in records(count, seed=7):
            for message in record["conversation"]:
                if message["role"] == "assistant":
                    message["content"] = " ".join([message["content"]] * 40)
            sink.write(json.dumps(record) + "\n")
    return path


def test_a_corpus_larger_than_the_memory_cap_prepares(tmp_path):
    corpus = long_corpus(tmp_path / "long.jsonl", 5_000)
    assert corpus.stat().st_size > 1.2 * MARGIN
    done = subprocess.run(
        [sys.executable, "-c", CAPPED, str(corpus), str(tmp_path / "out"), str(MARGIN), "prep"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["read"] == 5_000 and result["kept"] > 4_800
    # The cap is real: under it, merely holding the corpus's lines fails.
    held = subprocess.run(
        [sys.executable, "-c", CAPPED, str(corpus), str(tmp_path / "held"), str(MARGIN), "hold"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert held.returncode != 0 and "MemoryError" in held.stderr

"""A prep killed at any point and run again with the same command finishes with the output of an
uninterrupted run, says it resumed, and redoes none of the chunks it had finished.

Each killed run is a real `prep` in a child process that SIGKILLs itself at a chosen point (the
N-th call of one of prep's own steps, patched in the child only), so the kill lands exactly
there on every run of the test; the rerun is the same command, in this process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from userlm.data_prep import pipeline
from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from prep_corpus import write_corpus  # noqa: E402

OUTPUTS = ("conversations.jsonl", "rejected.jsonl", "train.jsonl.gz", "validation.jsonl.gz", "test.jsonl.gz")

KILLER = """
import importlib, json, os, signal, sys
from pathlib import Path
from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep

module_name, name, nth, when, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
module = importlib.import_module(module_name)
original, calls = getattr(module, name), [0]

def killed_at_the_nth_call(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(module, name, killed_at_the_nth_call)
prep(PrepConfig(**options))
"""

# (module, function, which call, before or after it): from the first chunk to the swap.
KILL_POINTS = [
    ("userlm.data_prep.pipeline", "scan_job", 3, "before"),  # mid-scan
    ("userlm.data_prep.decide", "write_json", 2, "before"),  # mid-decide
    ("userlm.data_prep.pipeline", "personas_job", 1, "after"),  # mid-personas
    ("userlm.data_prep.pipeline", "emit_job", 4, "before"),  # mid-write
    ("userlm.data_prep.pipeline", "concatenate", 3, "before"),  # mid-assembly
    ("userlm.data_prep.output", "replace_folder", 1, "before"),  # finished, not swapped in
    ("userlm.data_prep.output", "replace_folder", 1, "after"),  # swapped in, not cleaned up
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(600, tmp_path_factory.mktemp("corpus") / "wildchat.jsonl")


def options(corpus: Path, out: Path, **extra) -> dict:
    # Small chunks so that a small corpus has many; personas so that their stages run too.
    return {
        "inputs": [str(corpus)],
        "out": str(out),
        "chunk_mb": 0.2,
        "num_proc": 1,
        "progress": False,
        "personas": "style",
        "persona_filter": "words_per_turn>=10",
        **extra,
    }


def outputs(out: Path) -> dict:
    files = {name: (out / name).read_bytes() for name in OUTPUTS}
    stats = json.loads((out / "stats.json").read_text().replace(str(out), "OUT"))
    stats.pop("run")
    return {**files, "stats.json": stats}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "out"
    result = prep(PrepConfig(**options(corpus, out)))
    assert result.stats["run"]["resumed"] is False
    assert result.stats["kept"] > 0 and result.stats["filtered"]["persona_filter"] > 0
    return outputs(out)


def count_calls(monkeypatch, name: str) -> list:
    calls = []
    original = getattr(pipeline, name)
    monkeypatch.setattr(pipeline, name, lambda *args: calls.append(args[0]) or original(*args))
    return calls


@pytest.mark.parametrize("module, name, nth, when", KILL_POINTS, ids=[f"{n}-{i}-{w}" for _, n, i, w in KILL_POINTS])
def test_killed_anywhere_resumes_to_the_same_output(corpus, reference, tmp_path, monkeypatch, module, name, nth, when):
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, module, name, str(nth), when, json.dumps(options(corpus, out))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    work = tmp_path / ".out.prep-work"
    assert work.is_dir()
    scanned_before = {p.name for p in (work / "scan").glob("*.json")} if (work / "scan").is_dir() else set()
    written_before = {p.name for p in (work / "write").glob("*.json")} if (work / "write").is_dir() else set()

    scans, emits = count_calls(monkeypatch, "scan_job"), count_calls(monkeypatch, "emit_job")
    result = prep(PrepConfig(**options(corpus, out)))
    assert outputs(out) == reference
    assert not work.exists() and not list(tmp_path.glob(".out.*")), "the work folder is cleaned up"
    # What was finished before the kill was not done again.
    assert not {f"{chunk.number:06d}.json" for chunk in scans} & scanned_before
    assert not {f"{chunk.number:06d}.json" for chunk in emits} & written_before
    if (name, when) == ("replace_folder", "after"):
        assert "already finished" in " ".join(result.notes)
    else:
        assert result.stats["run"]["resumed"] is True
        assert any("resumed the interrupted run" in note for note in result.notes)


def test_two_workers_write_what_one_writes(corpus, reference, tmp_path):
    result = prep(PrepConfig(**options(corpus, tmp_path / "out", num_proc=2)))
    assert result.stats["run"]["num_proc"] == 2
    assert outputs(tmp_path / "out") == reference


def test_other_options_start_over_and_keep_nothing_stale(corpus, reference, tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            "userlm.data_prep.pipeline",
            "emit_job",
            "3",
            "before",
            json.dumps(options(corpus, out, split=[0.5, 0.25, 0.25])),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    result = prep(PrepConfig(**options(corpus, out)))
    assert result.stats["run"]["resumed"] is False
    assert outputs(out) == reference

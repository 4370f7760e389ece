"""Prep's output folder (issue 11): replaced as a whole or not at all, never written over when it
holds the user's own files, and a run that keeps nothing (or reads nothing) says so."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep
from userlm.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "prep"

KILL_DURING_WRITE = """
import os, signal, sys
from pathlib import Path
from userlm.data_prep import pipeline
from userlm.data_prep.config import PrepConfig

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

pipeline.emit_job = killed
pipeline.prep(PrepConfig(inputs=[Path(sys.argv[1])], out=Path(sys.argv[2]), languages=None, progress=False))
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def run(inputs, out: Path, **options):
    return prep(PrepConfig(inputs=[Path(p) for p in inputs], out=out, progress=False, **{"languages": None, **options}))


def test_a_re_prep_killed_mid_write_leaves_the_previous_output_whole(tmp_path):
    out = tmp_path / "out"
    run([FIXTURES / "wildchat.jsonl"], out)
    before = snapshot(out)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_WRITE, str(FIXTURES / "openai.jsonl"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Nothing of the new run is in OUT: every file is the previous run's, none is missing or added.
    assert snapshot(out) == before
    # And the interrupted run, run again, replaces it as a whole.
    again = run([FIXTURES / "openai.jsonl"], out)
    assert again.stats["inputs"][0]["format"] == "openai"
    assert {json.loads(line)["source"] for line in (out / "conversations.jsonl").read_text().splitlines()} == {"openai"}


def test_prep_never_writes_over_the_users_own_files(tmp_path, userlm_cli):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "train.jsonl").write_bytes((FIXTURES / "openai.jsonl").read_bytes())
    (logs / "notes.txt").write_text("mine")
    before = snapshot(logs)
    # The input inside OUT, and OUT holding files prep did not write: each one sentence, exit 2.
    for args, words in (
        (["prep", str(logs / "train.jsonl"), "--out", str(logs)], "is inside the output folder"),
        (["prep", str(FIXTURES / "openai.jsonl"), "--out", str(logs)], "holds files that `userlm prep` did not write"),
        (["prep", str(FIXTURES / "openai.jsonl"), "--out", str(logs / "notes.txt")], "is a file"),
        # A folder that cannot be made (tests run as root, whom permissions do not stop: a file is in the way).
        (["prep", str(FIXTURES / "openai.jsonl"), "--out", str(logs / "notes.txt" / "out")], "Cannot write beside"),
    ):
        done = userlm_cli(*args, "--no-progress")
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert snapshot(logs) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["logs"], "no work folder was even started"


def test_a_prep_output_is_replaced_and_an_empty_folder_is_used(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    run([FIXTURES / "wildchat.jsonl"], out)
    assert run([FIXTURES / "lmsys.jsonl"], out).stats["inputs"][0]["format"] == "lmsys"
    assert not (out / "train.jsonl").exists() and (out / "train.jsonl.gz").exists()


def test_a_second_prep_on_the_same_out_waits_its_turn(tmp_path):
    import fcntl

    out = tmp_path / "out"
    work = tmp_path / ".out.prep-work"
    work.mkdir()
    with open(work / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="Another `userlm prep` is writing"):
            run([FIXTURES / "openai.jsonl"], out)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, causes",
    [
        (["--languages", "xx"], "language filter: 3"),
        (["--languages", "any", "--keep-toxic", "--persona-filter", "words_per_turn>1000"], "persona_filter filter: 4"),
    ],
)
def test_keeping_nothing_writes_why_and_exits_2(tmp_path, args, causes, userlm_cli):
    out = tmp_path / "out"
    done = userlm_cli("prep", str(FIXTURES / "wildchat.jsonl"), "--out", str(out), "--no-progress", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("userlm prep: No conversation was kept: of 4 records read") and causes in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    # The output is whole and says the same: train would stop on it naming these filters.
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 0 and stats["read"] == 4


def test_an_empty_input_is_a_clear_outcome(tmp_path, userlm_cli):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = userlm_cli("prep", str(empty), "--out", str(tmp_path / "out"), "--no-progress")
    assert done.returncode == 2 and "The inputs hold no records" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    # Beside a non-empty input, it is a warning in the summary.
    done = userlm_cli(
        "prep",
        str(empty),
        str(FIXTURES / "openai.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--languages",
        "any",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert f"warning: {empty} holds no records" in done.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--split", "nan,0,0"], "`split` (--split) must be 3 values, each a number"),
        (["--near-dup-threshold", "nan"], "near_dup_threshold"),
        (["--num-proc", "0"], "`num_proc` (--num-proc) must be at least 1"),
        (["--chunk-mb", "0"], "`chunk_mb` (--chunk-mb) must be more than 0"),
    ],
)
def test_nonsense_options_stop_before_any_work(tmp_path, args, words, userlm_cli):
    done = userlm_cli("prep", str(FIXTURES / "openai.jsonl"), "--out", str(tmp_path / "out"), "--no-progress", *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []

"""`userlm prep` as a user runs it: the real console script in a subprocess, and its refusals
(one sentence, exit 2) through the same `userlm.cli.main` in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "prep"
USERLM = Path(sys.executable).parent / "userlm"


def userlm(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(USERLM), *args], capture_output=True, text=True, env=env, timeout=300)


def test_prep_writes_everything_and_prints_a_summary(tmp_path):
    out = tmp_path / "out"
    done = userlm(
        "prep",
        str(FIXTURES / "wildchat.jsonl"),
        str(FIXTURES / "openai.jsonl"),
        "--out",
        str(out),
        "--languages",
        "en",
        "--split",
        "0.5,0.25,0.25",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    for name in (
        "train.jsonl.gz",
        "validation.jsonl.gz",
        "test.jsonl.gz",
        "conversations.jsonl",
        "rejected.jsonl",
        "stats.json",
    ):
        assert (out / name).is_file(), name
    assert not (out / "hf").exists()  # only with --hf
    stats = json.loads((out / "stats.json").read_text())
    assert stats["read"] == 7 and stats["filtered"]["toxic"] == 1 and stats["filtered"]["language"] == 1
    assert stats["config"]["split"] == [0.5, 0.25, 0.25] and stats["config"]["languages"] == ["en"]
    assert "7 records read" in done.stdout and "7 read = 5 kept + 0 rejected + 2 filtered" in done.stdout
    assert str(out / "train.jsonl.gz") in done.stdout
    assert not list(out.glob(".*")) and not list(tmp_path.glob(".*")), "no temporary files are left behind"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--format", "wildchat", "--intents", "column"], "`intents: column` needs `intent_column`"),
        (["--min-user-turns", "4", "--max-user-turns", "2"], "bounds make no sense"),
        (["--split", "0.7,0.2,0.2"], "must sum to 1"),
        (["--split", "a,b"], "`split` (--split) must be 3 values, each a number"),
        (
            ["--min-user-turn", "2"],
            "Unknown key `--min-user-turn` on the command line; did you mean `--min-user-turns`?",
        ),
    ],
)
def test_nonsensical_options_exit_2_with_one_sentence(tmp_path, args, words, userlm_cli):
    done = userlm_cli("prep", str(FIXTURES / "openai.jsonl"), "--out", str(tmp_path), "--no-progress", *args)
    assert done.returncode == 2
    assert words in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_unknown_format_and_unreadable_file_exit_2(tmp_path, userlm_cli):
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"question": "q", "answer": "a"}\n')
    missing = tmp_path / "missing.jsonl"
    binary = tmp_path / "blob.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n")
    for path, words in ((odd, "Cannot tell the format"), (missing, "does not exist"), (binary, "neither JSON")):
        done = userlm_cli("prep", str(path), "--out", str(tmp_path / "out"), "--no-progress")
        assert done.returncode == 2, path
        assert words in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1

"""The conversations file that `userlm simulate`, `userlm chat` and `userlm test` append to.

It is checked before any model loads: a folder, a path that cannot be written, one of the
run's own inputs, or a file that is not this command's output (any line that is not a
conversation record, such as an intents file) is refused with one sentence, before a
byte of it changes. Only then is a torn last line (a run killed mid-write) cut off.

Each finished conversation is one JSON line, written and fsynced before the next, so a
kill loses at most the line being written. On a rerun the conversations already in the
file are skipped, except those that ended in an assistant or simulator error, which are
dropped from the file and simulated again unless `retry_failed` is off.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal, TypedDict

from userlm.atomic import atomic_write, fsync_folder
from userlm.errors import UserError


class _Turn(TypedDict):
    role: Literal["user", "assistant"]
    content: str


class Turn(_Turn, total=False):
    """A turn of a simulated conversation; user turns carry the guardrails' events and P(end)."""

    events: list[dict]
    p_end: float | None
    p_end_steered: float


class SimulatedConversation(TypedDict):
    """One line of the conversations file (`userlm simulate`, `userlm test`, `userlm chat`)."""

    conversation_id: str
    intent: str
    persona: str | None
    trial: int
    seed: int
    simulator: dict  # the simulator's settings, its sampling and end steering (conversation ids hash them)
    assistant: dict
    turns: list[Turn]
    termination_reason: str
    error: str | None
    exhausted_events: list[dict]
    seconds: float


# Every record is written by `json.dumps` of a dict whose first key is the conversation id.
RECORD_START = b'{"conversation_id": '
RECORD_KEYS = ("conversation_id", "turns", "termination_reason")
# Failures of a component that may be fixed before the rerun; the other reasons are outcomes.
RETRIED_REASONS = ("assistant_error", "simulator_error")


def check_output_file(path: Path, *, inputs: tuple = ()) -> None:
    """Refuse an output path this command must not write, with one sentence; writes nothing."""
    path = Path(path)
    for source in inputs:
        if isinstance(source, Path) and source.exists() and path.exists() and source.samefile(path):
            raise UserError(f"The output {path} is also an input of this run; write the conversations to another file.")
    if path.is_dir():
        raise UserError(
            f"The output {path} is a folder; give a file path for the "
            f"conversations, such as {path / 'conversations.jsonl'}."
        )
    check_writable(path)
    if path.exists():
        scan(path)


def check_writable(path: Path) -> None:
    """That `path` can be created or appended to, without changing what is there."""
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"Cannot write {path}: {existing} is a file, not a folder; choose another output path.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            open(path, "ab").close()
        else:
            tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as error:
        raise UserError(
            f"Cannot write {path} ({error.strerror or error}); choose another output path or fix its permissions."
        ) from None


def scan(path: Path) -> tuple[list[SimulatedConversation], int]:
    """The file's records, and the length of the part that holds whole lines;
    raises if it is not this command's output."""
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    torn = data[whole:]
    records = []
    for number, line in enumerate(data[:whole].splitlines(), 1):
        record = parse_record(line)
        if record is None:
            raise UserError(
                f"{path} is not a conversations file of userlm (line {number} is not a conversation record); "
                "choose another output path, so that this file is not appended to."
            )
        records.append(record)
    if torn and not (torn.startswith(RECORD_START) or RECORD_START.startswith(torn)):
        raise UserError(
            f"{path} is not a conversations file of userlm (its last line is not a conversation record); "
            "choose another output path, so that this file is not appended to."
        )
    return records, whole


def parse_record(line: bytes) -> SimulatedConversation | None:
    if not line.startswith(RECORD_START):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and all(key in record for key in RECORD_KEYS) else None


def prepare_resume(path: Path, wanted: set[str], *, retry_failed: bool) -> tuple[set[str], int]:
    """The ids of `wanted` already finished in `path`, and how many failed ones were dropped to be retried.

    Cuts a torn last line first, so that appends stay valid JSONL.
    """
    path = Path(path)
    check_output_file(path)
    if not path.exists():
        return set(), 0
    records, whole = scan(path)
    size = path.stat().st_size
    if whole < size:
        with open(path, "r+b") as handle:
            handle.truncate(whole)
            os.fsync(handle.fileno())
        print(f"Cut off a torn last line of {path} ({size - whole} bytes, an interrupted write).")
    latest = {r["conversation_id"]: r for r in records}
    failed = (
        {i for i in wanted if i in latest and latest[i]["termination_reason"] in RETRIED_REASONS}
        if retry_failed
        else set()
    )
    if failed:
        kept = [json.dumps(r, ensure_ascii=False) + "\n" for r in records if r["conversation_id"] not in failed]
        atomic_write(path, "".join(kept))
    return {i for i in wanted if i in latest} - failed, len(failed)


def latest_records(path: Path) -> dict[str, SimulatedConversation]:
    """Every conversation in the file by id, the last record of an id winning."""
    records, _ = scan(Path(path))
    return {r["conversation_id"]: r for r in records}


def open_output(path: Path):
    """The output file, opened for appending; a new file's entry in its folder is made durable too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    sink = open(path, "a", encoding="utf-8")
    if created:
        fsync_folder(path.parent)
    return sink


def append_record(sink, record: SimulatedConversation) -> None:
    # One line per finished conversation, on disk before the next: a kill loses at most the line being written.
    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    sink.flush()
    os.fsync(sink.fileno())

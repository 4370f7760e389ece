"""Per-user personas over the whole corpus, grouped by user on disk (docs/design.md#personas).

A user's persona is measured over all of their kept conversations, wherever they are in
the input, and a user's conversations can be anywhere. Holding every user's turns at once
would grow with the corpus, so the grouping is a hash partition on disk:

1. `group_users(chunk)`: each chunk's kept records, reduced to what personas read (the
   user's turns, language, ids and the persona column), go to users/NNNNNN.jsonl sorted by
   partition (a hash of the user, or of the conversation when there is no user id), with
   each partition's byte range in the chunk's marker.
2. `personas_of_partition(p)`: one partition's records from every chunk, in input order,
   through `personas.assign_personas` and `select_personas`: every conversation of a user
   is in the same partition, so these see the user whole. Written to personas/PPPP.jsonl.
3. `PersonaTable`: the results in one sqlite table keyed by conversation id, which pass 2
   looks up record by record.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from userlm.atomic import atomic_open

from .chunks import Chunk
from .kept import kept_records
from .work import Work


def unit_of(record: dict) -> str:
    """Who wrote the user turns, as `personas._units` groups them."""
    return f"user:{record['user_id']}" if record.get("user_id") else f"conversation:{record['conversation_id']}"


def partition_of(record: dict, partitions: int) -> int:
    return int.from_bytes(hashlib.blake2b(unit_of(record).encode(), digest_size=8).digest(), "little") % partitions


def slim(record: dict, config) -> dict:
    """What the persona steps read of a record."""
    from .personas import source_field

    reduced = {
        "conversation_id": record["conversation_id"],
        "user_id": record["user_id"],
        "language": record["language"],
        "messages": [m for m in record["messages"] if m["role"] == "user"],
        "columns": {},
    }
    if config.personas == "column":
        value = source_field(record, config.persona_column)
        if value is not None:
            reduced["columns"][config.persona_column] = value
    return reduced


def group_users(chunk: Chunk, config, work: Work, partitions: int) -> dict:
    lines: list[tuple[int, str]] = []
    for record in kept_records(chunk, work):
        lines.append((partition_of(record, partitions), json.dumps(slim(record, config), ensure_ascii=False)))
    lines.sort(key=lambda line: line[0])  # stable: input order within a partition
    ranges: dict[int, list[int]] = {}
    with atomic_open(work.file("users", chunk.number, ".jsonl"), "wb") as stream:
        for partition, text in lines:
            start = stream.tell()
            stream.write(text.encode() + b"\n")
            ranges.setdefault(partition, [start, start])[1] = stream.tell()
    summary = {"records": len(lines), "ranges": {str(p): r for p, r in ranges.items()}}
    work.finish("users", chunk.number, summary)
    return summary


def partition_records(work: Work, numbers: list[int], partition: int) -> list[dict]:
    records = []
    for number in numbers:
        byte_range = work.done("users", number)["ranges"].get(str(partition))
        if byte_range is None:
            continue
        with open(work.file("users", number, ".jsonl"), "rb") as stream:
            stream.seek(byte_range[0])
            data = stream.read(byte_range[1] - byte_range[0])
        records += [json.loads(line) for line in data.splitlines()]
    return records


def personas_of_partition(partition: int, numbers: list[int], config, work: Work, endpoint=None) -> dict:
    """Persona, attributes, failure and filter outcome of every record of one partition."""
    from .personas import assign_personas, select_personas

    records = partition_records(work, numbers, partition)
    failures: dict[str, str] = {}
    if config.personas != "none":
        failures = assign_personas(
            records,
            config.personas,
            column=config.persona_column,
            endpoint=endpoint,
            cache_path=work.staged / "persona_cache.sqlite",
            progress=False,
        )
    survivors = [record for record in records if record["conversation_id"] not in failures]
    selected = (
        {r["conversation_id"] for r in select_personas(survivors, config.persona_filter)[0]}
        if config.persona_filter
        else None
    )
    with atomic_open(work.file("personas", partition, ".jsonl")) as stream:
        for record in records:
            cid = record["conversation_id"]
            row = [
                cid,
                record.get("persona"),
                record.get("persona_attrs"),
                failures.get(cid),
                selected is None or cid in selected,
            ]
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {"records": len(records)}
    work.finish("personas", partition, summary)
    return summary


class PersonaTable:
    """Persona results by conversation id, in sqlite: looked up once per record in pass 2."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    @staticmethod
    def build(work: Work, partitions: int) -> Path:
        path = work.root / "personas.sqlite"
        if path.exists():
            return path
        building = path.with_suffix(".building")
        building.unlink(missing_ok=True)
        db = sqlite3.connect(building)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("CREATE TABLE results (cid TEXT PRIMARY KEY, row TEXT)")
        for partition in range(partitions):
            with open(work.file("personas", partition, ".jsonl"), encoding="utf-8") as stream:
                db.executemany("INSERT INTO results VALUES (?, ?)", ((json.loads(line)[0], line) for line in stream))
        db.commit()
        db.close()
        with open(building, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(building, path)
        return path

    def get(self, conversation_id: str) -> tuple[str | None, dict | None, str | None, bool]:
        """(persona, persona_attrs, failure reason or None, kept by the persona filter)."""
        (row,) = self.db.execute("SELECT row FROM results WHERE cid = ?", (conversation_id,)).fetchone()
        _, persona, attrs, failure, selected = json.loads(row)
        return persona, attrs, failure, selected

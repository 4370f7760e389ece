"""Pass 1 over one chunk: every record read, parsed, normalised and filtered on its own, in
any worker process. What the corpus-wide steps need is kept as small keys, not records:

    scan/NNNNNN.npz            per normalised record: its position in the chunk, a digest of its
                               id, whether it passed the filters, its duplicate keys, whether it
                               ends on an assistant turn
    scan/NNNNNN.rejected.jsonl the records that could not be read or normalised
    scan/NNNNNN.json           counts, detected languages, ShareGPT parts (written last)

Pass 2 (`write.py`) reads the chunk again rather than keeping the records: parsing twice
costs less than writing and reading every record in between, and needs no disk.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from userlm.atomic import atomic_open, write_jsonl

from .chunks import Chunk
from .dedup import DedupKeys, exact_key, user_text
from .filters import failed_filter
from .formats import raw_id, to_draft
from .normalise import normalise
from .reading import Rejection
from .work import Work


def id_digest(conversation_id: str) -> bytes:
    return hashlib.blake2b(conversation_id.encode(), digest_size=16).digest()


def normalised_records(chunk: Chunk, repairs: Counter, only=None):
    """(position, location, record or Rejection, raw) of every record of the chunk (or of
    those at the positions `only`)."""
    for position, where, raw in chunk.records(only):
        if isinstance(raw, Rejection):
            yield position, where, raw, raw
            continue
        record = to_draft(raw, chunk.fmt)
        if not isinstance(record, Rejection):
            record = normalise(record, repairs)
        if not isinstance(record, Rejection):
            record["meta"]["location"] = where
        yield position, where, record, raw


def scan_chunk(chunk: Chunk, config, work: Work, keys: DedupKeys) -> dict:
    """Pass 1 of one chunk; returns (and writes last) its summary."""
    repairs: Counter = Counter()
    rejected: Counter = Counter()
    filtered: Counter = Counter()
    formats: Counter = Counter()
    rejections, rows, languages, parts = [], [], {}, {}
    read = 0
    for position, where, record, raw in normalised_records(chunk, repairs):
        read += 1
        if isinstance(raw, Rejection):
            rejected[raw.reason] += 1
            rejections.append({"location": where, "reason": raw.reason, "detail": raw.detail})
            continue
        formats[chunk.fmt] += 1
        if isinstance(record, Rejection):
            rejected[record.reason] += 1
            entry = {"location": where, "reason": record.reason, "detail": record.detail}
            if raw_id(raw) is not None:
                entry["conversation_id"] = raw_id(raw)
            rejections.append(entry)
            continue
        if record["source"] == "sharegpt" and "part" in record["meta"]:
            parts[position] = [record["user_id"], record["meta"]["part"]]
        had_language = bool(record["language"])
        failed = failed_filter(record, config)
        if failed:
            filtered[failed] += 1
        elif not had_language:
            languages[position] = record["language"]
        text = user_text(record) if not failed else ""
        rows.append(
            (
                position,
                id_digest(record["conversation_id"]),
                not failed,
                exact_key(text) if not failed and config.exact_dedup else bytes(16),
                keys.near_keys(text) if not failed and config.near_dup_threshold else [0] * len(keys.bands),
                record["messages"][-1]["role"] == "assistant",
            )
        )
    columns = list(zip(*rows)) or [[]] * 6
    with atomic_open(work.file("scan", chunk.number, ".npz"), "wb") as stream:
        np.savez(
            stream,
            position=np.array(columns[0], dtype=np.int64),
            id=np.array(columns[1], dtype="S16"),
            candidate=np.array(columns[2], dtype=bool),
            exact=np.array(columns[3], dtype="S16"),
            near=np.array(columns[4], dtype=np.uint64).reshape(len(rows), len(keys.bands)),
            ends_on_assistant=np.array(columns[5], dtype=bool),
        )
    write_jsonl(work.file("scan", chunk.number, ".rejected.jsonl"), rejections)
    summary = {
        "read": read,
        "rejected": dict(rejected),
        "filtered": dict(filtered),
        "repairs": dict(repairs),
        "formats": dict(formats),
        "languages": languages,
        "parts": parts,
    }
    work.finish("scan", chunk.number, summary)
    return summary


def load_scan(work: Work, number: int) -> tuple[dict, dict]:
    """(arrays, summary) of one scanned chunk."""
    with np.load(work.file("scan", number, ".npz"), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}, work.done("scan", number)

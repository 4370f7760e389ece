"""The corpus-wide steps of prep, over pass 1's keys in input order, in one process.

Three things cannot be decided one record at a time: which conversation ids repeat (they
key the caches, samples and splits, so repeats are renamed `id#2`, ...), which ShareGPT
parts are followed by a later part of the same chat (those do not end), and which records
duplicate an earlier kept one. Each needs only a small key per record, which pass 1 wrote
(`scan.py`); walking those keys once, in input order, gives the same answers as holding
every record would, in a few hundred bytes a record.

Writes decide/NNNNNN.json per chunk (the kept records: position, id copy number, whether
the conversation ends, the detected language) and decided.json (the counts) last.
"""

from __future__ import annotations

import json
import math
from collections import Counter

from userlm.atomic import write_json

from .dedup import DuplicateIndex
from .scan import load_scan
from .work import Work

# Records per persona partition: the unit of per-user work, held in memory at once.
RECORDS_PER_PARTITION = 25_000


def decide(work: Work, numbers: list[int], config, bands: int) -> dict:
    marker = work.root / "decided.json"
    if marker.exists():
        return json.loads(marker.read_text())
    last_part: dict[str, int] = {}
    for number in numbers:
        for root, part in work.done("scan", number)["parts"].values():
            last_part[root] = max(last_part.get(root, 0), part)
    copies_of: dict[bytes, int] = {}
    index = DuplicateIndex(bands)
    counts: Counter = Counter()
    kept = 0
    work.stage_folder("decide")
    for number in numbers:
        arrays, summary = load_scan(work, number)
        decisions = []
        rows = zip(
            arrays["position"].tolist(),
            arrays["id"].tolist(),
            arrays["candidate"].tolist(),
            arrays["exact"].tolist(),
            arrays["near"].tolist(),
            arrays["ends_on_assistant"].tolist(),
        )
        for position, digest, candidate, exact, near, ends in rows:
            copies = copies_of.get(digest, 0)
            copies_of[digest] = copies + 1
            counts["renamed_duplicate_id"] += copies > 0
            if not candidate:
                continue
            duplicate = index.check(exact if config.exact_dedup else None, near if config.near_dup_threshold else None)
            if duplicate:
                counts[duplicate] += 1
                continue
            part = summary["parts"].get(str(position))
            if part is not None:
                ends = ends and part[1] >= last_part[part[0]]
            decisions.append([position, copies, ends, summary["languages"].get(str(position))])
        write_json(work.file("decide", number, ".json"), decisions)
        kept += len(decisions)
    result = {
        "kept": kept,
        "exact_duplicate": counts["exact_duplicate"],
        "near_duplicate": counts["near_duplicate"],
        "renamed_duplicate_id": counts["renamed_duplicate_id"],
        "partitions": max(1, math.ceil(kept / RECORDS_PER_PARTITION)),
    }
    write_json(marker, result)
    return result


def load_decisions(work: Work, number: int) -> dict[int, tuple[int, bool, str | None]]:
    """{position: (id copy number, ends, detected language)} of a chunk's kept records."""
    rows = json.loads(work.file("decide", number, ".json").read_text())
    return {position: (copies, ends, language) for position, copies, ends, language in rows}

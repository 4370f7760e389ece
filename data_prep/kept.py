"""A chunk's kept records, read again after the corpus-wide decisions: what pass 2, the
per-user persona grouping and the LLM intent requests all start from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from .chunks import Chunk
from .decide import load_decisions
from .scan import normalised_records
from .work import Work


def kept_records(chunk: Chunk, work: Work) -> Iterator[dict]:
    """The chunk's records that survived every filter and the duplicate removal, in input
    order, with their final id, `meta["ends"]` and language."""
    decisions = load_decisions(work, chunk.number)
    repairs: Counter = Counter()  # counted in pass 1 already
    for position, _, record, _ in normalised_records(chunk, repairs, only=decisions):
        copies, ends, language = decisions[position]
        if copies:
            record["meta"]["original_id"] = record["conversation_id"]
            record["conversation_id"] = f"{record['conversation_id']}#{copies + 1}"
        record["meta"]["ends"] = ends
        if language:
            record["language"] = language
        yield record

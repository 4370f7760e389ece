"""Pass 2 over one chunk: its kept records get their persona and intent, their split, and are
written as conversation records and flipped samples, in any worker process.

    write/NNNNNN.conversations.jsonl       the kept conversation records (docs/design.md#conversation-records)
    write/NNNNNN.<split>.jsonl.gz          one gzip member of flipped samples per split
    write/NNNNNN.persona-rejected.jsonl    records with no persona (rejected, not dropped)
    write/NNNNNN.intent-rejected.jsonl     records with no intent
    write/NNNNNN.json                      counts, written last

The split is a stable hash of the user (`split.split_of`), so it needs nothing beyond the
record itself; each split's user count needs the set of users, which goes back to the
pipeline as 8-byte hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from userlm.atomic import atomic_open, atomic_write, write_jsonl
from userlm.flipped.format import CONVERSATION_KEYS, flip
from userlm.flipped.scope import without_scope

from .chunks import Chunk
from .intents import assign_intents, drops_scope
from .kept import kept_records
from .split import SPLITS, split_of
from .users import PersonaTable
from .work import Work
from .writer import GzipMember, SampleEncoder


def user_hash(record: dict) -> int:
    key = record["user_id"] or record["conversation_id"]
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def rejection(record: dict, reason: str, detail: str) -> dict:
    return {
        "location": record["meta"]["location"],
        "reason": reason,
        "detail": detail,
        "conversation_id": record["conversation_id"],
    }


def emit_chunk(chunk: Chunk, config, work: Work, personas: PersonaTable | None) -> dict:
    records = list(kept_records(chunk, work))
    filtered: Counter = Counter()
    rejected: Counter = Counter()
    persona_rejections, intent_rejections = [], []
    if personas is not None:
        with_persona = []
        for record in records:
            persona, attrs, failure, selected = personas.get(record["conversation_id"])
            record["persona"], record["persona_attrs"] = persona, attrs
            if failure:
                rejected[failure] += 1
                persona_rejections.append(rejection(record, failure, "no persona for this conversation"))
            elif not selected:
                filtered["persona_filter"] += 1
            else:
                with_persona.append(record)
        records = with_persona
    if config.intents == "llm":
        from .fleet import endpoint_of
        from .llm_intents import intents_from_cache

        endpoint = endpoint_of(
            config.intent_endpoint,
            config.intent_model,
            timeout=config.endpoint_timeout,
            concurrency=config.endpoint_concurrency,
        )
        failures = intents_from_cache(records, work.staged / "intent_cache.sqlite", endpoint.model, endpoint.host)
    else:
        failures = assign_intents(records, config.intents, column=config.intent_column)
    failed = {id(record) for record, _ in failures}
    for record, reason in failures:
        rejected[reason.reason] += 1
        intent_rejections.append(rejection(record, reason.reason, reason.detail))
    records = [record for record in records if id(record) not in failed]

    members = {split: GzipMember() for split in SPLITS}
    counts = {split: {"conversations": 0, "samples": 0, "end_samples": 0, "longest_line_chars": 0} for split in SPLITS}
    users: dict[str, set[int]] = {split: set() for split in SPLITS}
    with atomic_open(work.file("write", chunk.number, ".conversations.jsonl")) as conversations:
        for record in records:
            split = split_of(record, config.split)
            record["meta"]["split"] = split
            if split == "train" and drops_scope(record["conversation_id"], config.scope_dropout):
                record["intent"] = without_scope(record["intent"])
            conversations.write(
                json.dumps({key: record[key] for key in CONVERSATION_KEYS}, ensure_ascii=False, default=str)
            )
            conversations.write("\n")
            encode = SampleEncoder()
            count = counts[split]
            for sample in flip(record, split):
                line = encode(sample)
                count["longest_line_chars"] = max(count["longest_line_chars"], len(line))
                members[split].write(line + "\n")
                count["samples"] += 1
                count["end_samples"] += sample["is_end"]
            count["conversations"] += 1
            users[split].add(user_hash(record))
    for split in SPLITS:
        atomic_write(work.file("write", chunk.number, f".{split}.jsonl.gz"), members[split].finish())
    write_jsonl(work.file("write", chunk.number, ".persona-rejected.jsonl"), persona_rejections)
    write_jsonl(work.file("write", chunk.number, ".intent-rejected.jsonl"), intent_rejections)
    summary = {
        "kept": len(records),
        "filtered": dict(filtered),
        "rejected": dict(rejected),
        "splits": counts,
        "users": {split: sorted(hashes) for split, hashes in users.items()},
    }
    work.finish("write", chunk.number, summary)
    return summary

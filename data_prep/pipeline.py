"""`prep(config)`: conversation logs in, flipped intent-conditioned datasets out (DESIGN.md 4).

`prep` is a short sequence of steps, each a function below: read and normalise every
input, mark which logs end, filter (turns, characters, toxicity, language, exact and near
duplicates), personas, intents, the user-level split, write, then the stats. Every record
read is accounted for exactly once: kept, rejected (by reason) or filtered (by filter),
and `stats.json` says so.

    from userlm.data_prep.config import PrepConfig
    from userlm.data_prep.pipeline import prep, prep_summary
    from userlm.summary import print_summary

    result = prep(PrepConfig(inputs=[Path("logs.jsonl")], out=Path("out/prep")))
    print_summary(prep_summary(result))
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from userlm.atomic import write_json, write_jsonl
from userlm.config import to_dict
from userlm.data_prep.format import CONVERSATION_KEYS
from userlm.summary import Summary

from . import dedup, filters
from .config import PrepConfig
from .formats import raw_id, read_records, to_draft
from .intents import assign_intents
from .normalise import normalise
from .reading import Rejection
from .split import SPLITS, split_by_user
from .writer import save_hf, write_samples


@dataclass
class PrepResult:
    out_dir: Path
    stats: dict
    written: dict[str, Path] = field(default_factory=dict)


class Ledger:
    """Where every record read went: kept, rejected by reason, filtered by filter."""

    def __init__(self) -> None:
        self.read = 0
        self.rejected: Counter = Counter()
        self.filtered: Counter = Counter()
        self.repairs: Counter = Counter()
        self.rejections: list[dict] = []

    def reject(self, where: dict, rejection: Rejection, conversation_id: str | None = None) -> None:
        self.rejected[rejection.reason] += 1
        entry = {"location": where, "reason": rejection.reason, "detail": rejection.detail}
        if conversation_id is not None:
            entry["conversation_id"] = conversation_id
        self.rejections.append(entry)

    def filter(self, name: str, kept: list[dict], removed: list) -> list[dict]:
        self.filtered[name] += len(removed)
        return kept

    def check_closed(self, kept: int) -> None:
        accounted = kept + sum(self.rejected.values()) + sum(self.filtered.values())
        if accounted != self.read:
            raise AssertionError(f"prep lost records: read {self.read}, accounted for {accounted}")


def prep(config: PrepConfig) -> PrepResult:
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger()
    records, inputs = read_inputs(config, ledger)
    mark_ends(records)
    records = apply_filters(records, config, ledger)
    # Personas and intents are the costly per-record steps: they run only on what the filters kept.
    records = apply_personas(records, config, out, ledger)
    records = apply_intents(records, config, out, ledger)
    by_split = split_by_user(records, config.split)
    written, split_counts = write_outputs(out, records, by_split, ledger, config)
    stats = prep_stats(config, ledger, inputs, len(records), split_counts, written, time.perf_counter() - started)
    write_json(written["stats"], stats)
    return PrepResult(out_dir=out, stats=stats, written=written)


def read_inputs(config: PrepConfig, ledger: Ledger) -> tuple[list[dict], list[dict]]:
    """Every input read, parsed and normalised; and each input's path and (main) format."""
    records: list[dict] = []
    seen_ids: Counter = Counter()
    inputs = []
    for path in config.inputs:
        formats_seen: Counter = Counter()
        for where, raw, fmt in read_records(Path(path), config.format, progress=config.progress):
            ledger.read += 1
            if isinstance(raw, Rejection):
                ledger.reject(where, raw)
                continue
            formats_seen[fmt] += 1
            record = to_draft(raw, fmt)
            if not isinstance(record, Rejection):
                record = normalise(record, ledger.repairs)
            if isinstance(record, Rejection):
                ledger.reject(where, record, raw_id(raw))
                continue
            record["meta"]["location"] = where
            make_id_unique(record, seen_ids, ledger.repairs)
            records.append(record)
        inputs.append({"path": str(path), "format": formats_seen.most_common(1)[0][0] if formats_seen else None})
    return records, inputs


def make_id_unique(record: dict, seen_ids: Counter, repairs: Counter) -> None:
    """Ids key the caches, samples and splits, so they must be unique; real dumps repeat some."""
    repeats = seen_ids[record["conversation_id"]]
    seen_ids[record["conversation_id"]] += 1
    if repeats:
        repairs["renamed_duplicate_id"] += 1
        record["meta"]["original_id"] = record["conversation_id"]
        record["conversation_id"] = f"{record['conversation_id']}#{repeats + 1}"


def mark_ends(records: list[dict]) -> None:
    """`meta["ends"]`: False for a ShareGPT part followed by a later part of the same chat,
    and for a log whose last turn is the user's (it was cut before the reply)."""
    last_part: dict[str, int] = {}
    for record in records:
        if record["source"] == "sharegpt" and "part" in record["meta"]:
            root = record["user_id"]
            last_part[root] = max(last_part.get(root, 0), record["meta"]["part"])
    for record in records:
        ends = record["messages"][-1]["role"] == "assistant"
        if record["source"] == "sharegpt" and "part" in record["meta"]:
            ends = ends and record["meta"]["part"] >= last_part[record["user_id"]]
        record["meta"]["ends"] = ends


def apply_filters(records: list[dict], config: PrepConfig, ledger: Ledger) -> list[dict]:
    """The filters, cheapest first; each counts what it removes."""
    records = ledger.filter("user_turns", *filters.by_user_turns(records, config.min_user_turns, config.max_user_turns))
    records = ledger.filter("chars", *filters.by_chars(records, config.min_chars, config.max_chars))
    if not config.keep_toxic:
        records = ledger.filter("toxic", *filters.by_toxicity(records))
    filters.detect_languages(records, progress=config.progress)
    if config.languages is not None:
        records = ledger.filter("language", *filters.by_language(records, config.languages))
    return remove_duplicates(records, config, ledger)


def remove_duplicates(records: list[dict], config: PrepConfig, ledger: Ledger) -> list[dict]:
    if not (config.exact_dedup or config.near_dup_threshold):
        return records
    texts = [dedup.user_text(record) for record in records]
    if config.exact_dedup:
        keep, drop = dedup.exact(texts)
        records = ledger.filter("exact_duplicate", [records[i] for i in keep], drop)
        texts = [texts[i] for i in keep]
    if config.near_dup_threshold:
        keep, drop = dedup.near(texts, threshold=config.near_dup_threshold, progress=config.progress)
        records = ledger.filter("near_duplicate", [records[i] for i in keep], drop)
    return records


def endpoint_for(url: str, model: str, config: PrepConfig):
    from userlm.endpoint import Endpoint

    return Endpoint(base_url=url, model=model, timeout=config.endpoint_timeout, max_concurrency=config.endpoint_concurrency)


def apply_personas(records: list[dict], config: PrepConfig, out: Path, ledger: Ledger) -> list[dict]:
    """Personas from `config.personas` (failures rejected), then the `persona_filter` subset."""
    from .personas import assign_personas, select_personas

    if config.personas != "none":
        endpoint = endpoint_for(config.persona_endpoint_url, config.persona_model_name, config) if config.personas == "llm" else None
        failed = assign_personas(
            records, config.personas, column=config.persona_column, endpoint=endpoint,
            cache_path=out / "persona_cache.sqlite", progress=config.progress,
        )
        failures = [
            (record, Rejection(failed[record["conversation_id"]], "no persona for this conversation"))
            for record in records
            if record["conversation_id"] in failed
        ]
        records = drop_failures(records, failures, ledger)
    if config.persona_filter:
        records = ledger.filter("persona_filter", *select_personas(records, config.persona_filter))
    return records


def apply_intents(records: list[dict], config: PrepConfig, out: Path, ledger: Ledger) -> list[dict]:
    """An intent on every record (failures rejected)."""
    endpoint = endpoint_for(config.intent_endpoint, config.intent_model, config) if config.intents == "llm" else None
    failures = assign_intents(
        records, config.intents, column=config.intent_column, endpoint=endpoint,
        cache_path=out / "intent_cache.sqlite", progress=config.progress,
    )
    return drop_failures(records, failures, ledger)


def drop_failures(records: list[dict], failures: list[tuple[dict, Rejection]], ledger: Ledger) -> list[dict]:
    failed = {id(record) for record, _ in failures}
    for record, rejection in failures:
        ledger.reject(record["meta"]["location"], rejection, record["conversation_id"])
    return [record for record in records if id(record) not in failed]


def write_outputs(out: Path, records: list[dict], by_split: dict[str, list[dict]], ledger: Ledger,
                  config: PrepConfig) -> tuple[dict[str, Path], dict[str, dict]]:
    """Every output file but stats.json; what was written where, and the counts per split."""
    written = {"conversations": out / "conversations.jsonl", "rejected": out / "rejected.jsonl", "stats": out / "stats.json"}
    write_jsonl(written["conversations"], ({key: record[key] for key in CONVERSATION_KEYS} for record in records))
    write_jsonl(written["rejected"], ledger.rejections)
    split_counts = write_samples(out, by_split, progress=config.progress)
    written.update({split: out / f"{split}.jsonl" for split in SPLITS})
    if config.hf:
        written["hf"] = save_hf(out, split_counts, progress=config.progress)
    return written, split_counts


def prep_stats(config: PrepConfig, ledger: Ledger, inputs: list[dict], kept: int, split_counts: dict,
               written: dict[str, Path], seconds: float) -> dict:
    ledger.check_closed(kept)
    return {
        "inputs": inputs,
        "read": ledger.read,
        "kept": kept,
        "rejected": dict(ledger.rejected),
        "filtered": dict(ledger.filtered),
        "repairs": dict(ledger.repairs),
        "splits": split_counts,
        "intents": config.intents,
        "personas": config.personas,
        "seconds": round(seconds, 2),
        "config": {key: value for key, value in to_dict(config).items() if key != "progress"},
        "written": {name: str(path) for name, path in written.items()},
    }


def prep_summary(result: PrepResult) -> Summary:
    """Where the records went (rejected by reason, filtered by filter, kept by split) and the files."""
    stats = result.stats
    rows: list[tuple] = [("rejected", reason, count) for reason, count in sorted(stats["rejected"].items())]
    rows += [("filtered", name, count) for name, count in stats["filtered"].items()]
    rows += [("kept", split, f"{counts['conversations']} conversations, {counts['samples']} samples")
             for split, counts in stats["splits"].items()]
    rows.append(("kept", "total", stats["kept"]))
    closing = (f"{stats['read']} read = {stats['kept']} kept + {sum(stats['rejected'].values())} rejected"
               f" + {sum(stats['filtered'].values())} filtered")
    return Summary(
        title=f"userlm prep: {stats['read']} records read in {stats['seconds']} s",
        columns=("outcome", "reason / filter / split", "count"),
        rows=rows,
        notes=[closing],
        wrote=dict(result.written),
    )

"""`prep(config)`: conversation logs in, flipped intent-conditioned datasets out (DESIGN.md 4).

Read top to bottom, the steps are: read and parse every input, normalise, mark which
ShareGPT parts end, filter (turns, characters, toxicity, language, exact and near
duplicates), personas, intents, the user-level split, then write. Every record read is
accounted for exactly once: kept, rejected (by reason) or filtered (by filter), and
`stats.json` says so.

    from userlm.data_prep.pipeline import PrepConfig, prep
    result = prep(PrepConfig(inputs=[sharegpt_path()], out_dir=Path("out/prep")))
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from userlm.data_prep.format import CONVERSATION_KEYS
from userlm.errors import UserError

from . import dedup, filters
from .formats import FORMATS, check_format, detect_format, to_draft
from .intents import INTENT_SOURCES, assign_intents
from .normalise import normalise
from .reading import Rejection, read_file
from .split import SPLITS, split_of
from .writer import save_hf, write_json, write_jsonl, write_samples

PERSONA_SOURCES = ("none", "style", "llm", "column")
# How many readable records may pass without one whose keys name a format.
DETECT_WINDOW = 100


@dataclass
class PrepConfig:
    inputs: list[Path]
    out_dir: Path
    format: str | None = None  # None: detect per file from the keys of its first records
    languages: tuple[str, ...] | None = ("en",)  # None keeps every language
    drop_toxic: bool = True
    min_user_turns: int = 1
    max_user_turns: int | None = None
    min_chars: int = 1
    max_chars: int | None = None
    exact_dedup: bool = True
    near_dup_threshold: float | None = 0.9  # None turns near-duplicate removal off
    split_shares: tuple[float, float, float] = (0.9, 0.05, 0.05)
    intents: str = "heuristic"
    intent_column: str | None = None
    intent_endpoint: str | None = None
    intent_model: str | None = None
    personas: str = "none"
    persona_column: str | None = None
    persona_filter: str | None = None
    persona_endpoint: str | None = None  # defaults to the intent endpoint
    persona_model: str | None = None
    endpoint_timeout: float = 60.0  # seconds per request, for the intent and persona endpoints
    endpoint_concurrency: int = 8
    hf: bool = True  # also save OUT/hf/ (a DatasetDict)
    progress: bool = True

    def validate(self) -> None:
        if not self.inputs:
            raise UserError("Give at least one input file or datasets folder.")
        for path in self.inputs:
            if not Path(path).exists():
                raise UserError(f"The input {path} does not exist; check the path.")
        if self.format is not None:
            check_format(self.format)
        for name, low, high in (
            ("user turns", self.min_user_turns, self.max_user_turns),
            ("characters", self.min_chars, self.max_chars),
        ):
            if low < 0 or (high is not None and high < low):
                raise UserError(f"The {name} bounds make no sense (min {low}, max {high}); use 0 <= min <= max.")
        shares = self.split_shares
        if len(shares) != 3 or any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-6:
            raise UserError(f"The split shares {list(shares)} must be three non-negative numbers summing to 1, e.g. 0.9,0.05,0.05.")
        if self.near_dup_threshold is not None and not 0 < self.near_dup_threshold <= 1:
            raise UserError(f"The near-duplicate threshold {self.near_dup_threshold} must be in (0, 1].")
        if self.intents not in INTENT_SOURCES:
            raise UserError(f"Unknown intent source {self.intents!r}; use one of {', '.join(INTENT_SOURCES)}.")
        if self.intents == "column" and not self.intent_column:
            raise UserError("--intents column needs --intent-column NAME, the field that holds the intent.")
        if self.intents == "llm" and not (self.intent_endpoint and self.intent_model):
            raise UserError("--intents llm needs --intent-endpoint URL and --intent-model NAME.")
        if self.personas not in PERSONA_SOURCES:
            raise UserError(f"Unknown persona source {self.personas!r}; use one of {', '.join(PERSONA_SOURCES)}.")
        if self.personas == "column" and not self.persona_column:
            raise UserError("--personas column needs --persona-column NAME, the field that holds the persona.")
        if self.personas == "llm" and not (
            (self.persona_endpoint or self.intent_endpoint) and (self.persona_model or self.intent_model)
        ):
            raise UserError("--personas llm needs an endpoint: --persona-endpoint URL and --persona-model NAME.")
        if self.endpoint_timeout <= 0 or self.endpoint_concurrency < 1:
            raise UserError("The endpoint timeout must be positive and its concurrency at least 1.")
        if self.persona_filter:
            from .personas import parse_filter

            parse_filter(self.persona_filter)  # a bad expression stops the run before any work


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


def read_input(path: Path, fmt: str | None, progress: bool) -> Iterator[tuple[dict, dict | Rejection, str]]:
    """(location, record or Rejection, format) for every record of one input."""
    records = read_file(path, progress=progress)
    if fmt is not None:
        for where, record in records:
            yield where, record, fmt
        return
    # Detect from the first records whose keys name a format; hold them back until then.
    held = []
    readable = 0
    for where, record in records:
        held.append((where, record))
        if isinstance(record, Rejection):
            continue
        fmt = detect_format(record)
        readable += 1
        if fmt is not None or readable >= DETECT_WINDOW:
            break
    if fmt is None:
        if not readable:
            # Nothing readable: every record is rejected, whatever the format.
            for where, record in held:
                yield where, record, "unknown"
            return
        raise UserError(
            f"Cannot tell the format of {path} from its records' keys; pass --format with one of {', '.join(FORMATS)}."
        )
    for where, record in held:
        yield where, record, fmt
    for where, record in records:
        yield where, record, fmt


def raw_id(record) -> str | None:
    """The source's own id of a raw record, for rejected.jsonl."""
    if isinstance(record, dict):
        for key in ("id", "conversation_id", "conversation_hash"):
            if isinstance(record.get(key), (str, int)):
                return str(record[key])
    return None


def mark_ends(drafts: list[dict]) -> None:
    """`meta["ends"]`: False for a ShareGPT part followed by a later part of the same chat,
    and for a log whose last turn is the user's (it was cut before the reply)."""
    last_part: dict[str, int] = {}
    for draft in drafts:
        if draft["source"] == "sharegpt" and "part" in draft["meta"]:
            root = draft["user_id"]
            last_part[root] = max(last_part.get(root, 0), draft["meta"]["part"])
    for draft in drafts:
        ends = draft["messages"][-1]["role"] == "assistant"
        if draft["source"] == "sharegpt" and "part" in draft["meta"]:
            ends = ends and draft["meta"]["part"] >= last_part[draft["user_id"]]
        draft["meta"]["ends"] = ends


def prep(config: PrepConfig) -> PrepResult:
    config.validate()
    started = time.perf_counter()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger()
    progress = config.progress

    # 1. Read, parse and normalise every input.
    drafts: list[dict] = []
    seen_ids: Counter = Counter()
    inputs = []
    for path in config.inputs:
        formats_seen: Counter = Counter()
        for where, record, fmt in read_input(Path(path), config.format, progress):
            ledger.read += 1
            if isinstance(record, Rejection):
                ledger.reject(where, record)
                continue
            formats_seen[fmt] += 1
            draft = to_draft(record, fmt)
            if not isinstance(draft, Rejection):
                draft = normalise(draft, ledger.repairs)
            if isinstance(draft, Rejection):
                ledger.reject(where, draft, raw_id(record))
                continue
            draft["meta"]["location"] = where
            # Ids key the caches, samples and splits, so they must be unique (real dumps repeat some).
            repeats = seen_ids[draft["conversation_id"]]
            seen_ids[draft["conversation_id"]] += 1
            if repeats:
                ledger.repairs["renamed_duplicate_id"] += 1
                draft["meta"]["original_id"] = draft["conversation_id"]
                draft["conversation_id"] = f"{draft['conversation_id']}#{repeats + 1}"
            drafts.append(draft)
        inputs.append({"path": str(path), "format": formats_seen.most_common(1)[0][0] if formats_seen else None})
    mark_ends(drafts)

    # 2. Filters, cheapest first; each counts what it removes.
    kept = ledger.filter("user_turns", *filters.by_user_turns(drafts, config.min_user_turns, config.max_user_turns))
    kept = ledger.filter("chars", *filters.by_chars(kept, config.min_chars, config.max_chars))
    if config.drop_toxic:
        kept = ledger.filter("toxic", *filters.by_toxicity(kept))
    filters.detect_languages(kept, progress=progress)
    if config.languages is not None:
        kept = ledger.filter("language", *filters.by_language(kept, config.languages))
    if config.exact_dedup or config.near_dup_threshold is not None:
        texts = [dedup.user_text(record) for record in kept]
        if config.exact_dedup:
            keep, drop = dedup.exact(texts)
            kept = ledger.filter("exact_duplicate", [kept[i] for i in keep], drop)
            texts = [texts[i] for i in keep]
        if config.near_dup_threshold is not None:
            keep, drop = dedup.near(texts, threshold=config.near_dup_threshold, progress=progress)
            kept = ledger.filter("near_duplicate", [kept[i] for i in keep], drop)

    # 3. Personas (and the persona subset), then intents: the costly per-record steps
    # run only on what survived the filters.
    if config.personas != "none" or config.persona_filter:
        kept = apply_personas(kept, config, out, ledger)
    intent_endpoint = None
    if config.intents == "llm":
        from userlm.endpoint import Endpoint

        intent_endpoint = Endpoint(
            base_url=config.intent_endpoint,
            model=config.intent_model,
            timeout=config.endpoint_timeout,
            max_concurrency=config.endpoint_concurrency,
        )
    failures = assign_intents(
        kept,
        config.intents,
        column=config.intent_column,
        endpoint=intent_endpoint,
        cache_path=out / "intent_cache.sqlite",
        progress=progress,
    )
    kept = drop_failures(kept, failures, ledger)

    # 4. The user-level split.
    by_split: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for record in kept:
        split = split_of(record, config.split_shares)
        record["meta"]["split"] = split
        by_split[split].append(record)

    # 5. Write.
    written = {
        "conversations": out / "conversations.jsonl",
        "rejected": out / "rejected.jsonl",
        "stats": out / "stats.json",
    }
    write_jsonl(written["conversations"], ({key: r[key] for key in CONVERSATION_KEYS} for r in kept))
    write_jsonl(written["rejected"], ledger.rejections)
    split_counts = write_samples(out, by_split, progress=progress)
    for split in SPLITS:
        written[split] = out / f"{split}.jsonl"
    if config.hf:
        written["hf"] = save_hf(out, split_counts, progress=progress)

    stats = {
        "inputs": inputs,
        "read": ledger.read,
        "kept": len(kept),
        "rejected": dict(ledger.rejected),
        "filtered": dict(ledger.filtered),
        "repairs": dict(ledger.repairs),
        "splits": split_counts,
        "intents": config.intents,
        "personas": config.personas,
        "seconds": round(time.perf_counter() - started, 2),
        "config": {k: v for k, v in asdict(config).items() if k != "progress"},
        "written": {name: str(path) for name, path in written.items()},
    }
    closing = len(kept) + sum(ledger.rejected.values()) + sum(ledger.filtered.values())
    if closing != ledger.read:
        raise AssertionError(f"prep lost records: read {ledger.read}, accounted for {closing}")
    write_json(written["stats"], stats)
    return PrepResult(out_dir=out, stats=stats, written=written)


def drop_failures(records: list[dict], failures, ledger: Ledger) -> list[dict]:
    failed = {id(record) for record, _ in failures}
    for record, rejection in failures:
        ledger.reject(record["meta"]["location"], rejection, record["conversation_id"])
    return [record for record in records if id(record) not in failed]


def apply_personas(records: list[dict], config: PrepConfig, out: Path, ledger: Ledger) -> list[dict]:
    """Personas from `config.personas` (failures rejected), then the `--persona-filter` subset."""
    from .personas import assign_personas, select_personas

    if config.personas != "none":
        endpoint = None
        if config.personas == "llm":
            from userlm.endpoint import Endpoint

            endpoint = Endpoint(
                base_url=config.persona_endpoint or config.intent_endpoint,
                model=config.persona_model or config.intent_model,
                timeout=config.endpoint_timeout,
                max_concurrency=config.endpoint_concurrency,
            )
        if config.personas == "column":
            # personas.py reads a column from the record or its meta; source fields live in `columns`.
            for record in records:
                if config.persona_column in record["columns"]:
                    record["meta"][config.persona_column] = record["columns"][config.persona_column]
        failed = assign_personas(
            records,
            config.personas,
            column=config.persona_column,
            endpoint=endpoint,
            cache_path=out / "persona_cache.sqlite",
            progress=config.progress,
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


def run_quickstart_prep(out_dir: Path, *, progress: bool = True) -> PrepResult:
    """Prep of the bundled ShareGPT logs with the defaults (heuristic intents, English),
    then the same closing summary `userlm prep` prints."""
    from userlm.defaults import sharegpt_path

    from .cli import print_summary

    result = prep(PrepConfig(inputs=[sharegpt_path()], out_dir=Path(out_dir), progress=progress))
    print_summary(result)
    return result

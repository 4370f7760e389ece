"""`prep(config)`: conversation logs in, flipped intent-conditioned datasets out (docs/design.md#data-preparation).

Prep streams, so its memory does not grow with the corpus beyond a few small keys per
record, and a killed run resumes. The input is cut into chunks (`chunks.py`) and worked in
passes, each chunk by any of `num_proc` worker processes:

1. scan (`scan.py`): read, normalise and filter each record on its own; keep small keys.
2. decide (`decide.py`): the corpus-wide steps (repeated ids, ShareGPT parts that do not
   end, exact and near duplicates) over those keys, in input order, in this process.
3. personas (`users.py`, only when asked for): kept records grouped by user on disk, each
   user's persona measured (or written by an LLM) over all of their conversations.
4. LLM intents (only with `intents: llm`): every kept record's request, streamed to the
   endpoint(s), answers cached.
5. emit (`emit.py`): read each chunk again; persona, intent, the user-level split (a hash
   of the user: nothing global), conversation records and flipped samples.
6. assemble: the chunks' files concatenated in chunk order, `stats.json` last, and the
   finished folder swapped in at OUT whole (`output.py`).

Every record read is accounted for exactly once: kept, rejected (by reason) or filtered
(by filter), and `stats.json` says so.

    from userlm.data_prep.config import PrepConfig
    from userlm.data_prep.pipeline import prep, prep_summary
    from userlm.summary import print_summary

    if __name__ == "__main__":  # workers are spawned, which imports the calling script again
        result = prep(PrepConfig(inputs=[Path("logs.jsonl")], out=Path("out/prep")))
        print_summary(prep_summary(result))
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from userlm.atomic import atomic_open, write_json
from userlm.config import to_dict
from userlm.errors import UserError
from userlm.summary import Summary

from .chunks import Chunk, plan_chunks
from .config import PrepConfig
from .decide import decide
from .dedup import dedup_keys
from .emit import emit_chunk
from .filters import applied_filters
from .formats import file_format
from .output import RUN_ONLY_OPTIONS, Run, check_out
from .scan import scan_chunk
from .split import SPLITS
from .users import PersonaTable, group_users, personas_of_partition
from .work import Work
from .workers import Progress, Workers, usable_cores
from .writer import save_hf

MB = 1 << 20


@dataclass
class PrepResult:
    out_dir: Path
    stats: dict
    written: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def prep(config: PrepConfig) -> PrepResult:
    started = time.perf_counter()
    check_out(config)
    # Reading each input's first records finds an unreadable file or format before any work.
    formats = [file_format(Path(path), config.format) for path in config.inputs]
    run = Run(config)
    try:
        state = run.start()
        if state == "finished":
            run.clean_up()
            return finished_result(run.out, ["an earlier run of this command had already finished; nothing was redone"])
        notes = [] if state == "fresh" else [f"resumed the interrupted run kept in {run.work.root}"]
        if state == "resumed":
            say(config, f"userlm prep: {notes[0]}")
        staged_stats = run.work.staged / "stats.json"
        if not (run.work.root / "ready.json").exists():
            stages: dict[str, float] = {}
            with Workers(num_proc_of(config)) as workers:
                stats = build(config, run, formats, notes, stages, workers)
            stats["run"] = {
                "seconds": round(time.perf_counter() - started, 2),
                "resumed": state == "resumed",
                "num_proc": num_proc_of(config),
                "stage_seconds": stages,
            }
            write_json(staged_stats, stats)
        elif staged_stats.exists():  # finished but not swapped in: only the swap was left
            stats = json.loads(staged_stats.read_text())
            write_json(staged_stats, {**stats, "run": {**stats["run"], "resumed": True}})
        run.swap_in()
        run.clean_up()
    except BaseException:
        run.release()
        raise
    result = finished_result(run.out, notes)
    return result


def say(config: PrepConfig, text: str) -> None:
    if config.progress:
        print(text, file=sys.stderr, flush=True)


def num_proc_of(config: PrepConfig) -> int:
    return config.num_proc or usable_cores()


def finished_result(out: Path, notes: list[str]) -> PrepResult:
    stats = json.loads((out / "stats.json").read_text())
    written = {name: out / Path(path).name for name, path in stats["written"].items()}
    return PrepResult(out_dir=out, stats=stats, written=written, notes=notes + input_warnings(stats))


def input_warnings(stats: dict) -> list[str]:
    return [f"warning: {entry['path']} holds no records" for entry in stats["inputs"] if not entry["records"]]


def build(
    config: PrepConfig, run: Run, formats: list[str | None], notes: list[str], seconds: dict, workers: Workers
) -> dict:
    """Every pass but the swap; the stats. `seconds` gets each stage's time."""
    work = run.work
    run.save_plan()
    inputs = list(zip(map(Path, config.inputs), formats))
    chunk_bytes = max(1, int(config.chunk_mb * MB))
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    scanned = scan(config, work, workers, lambda: plan_chunks(inputs, chunk_bytes), notes)
    lap("scan")
    if not scanned["read"]:
        run.clean_up()
        raise UserError(
            f"The inputs hold no records ({', '.join(map(str, config.inputs))}); "
            "check that they are the files you meant."
        )

    def chunks():
        """The chunks again: from pass 1's plan when no chunk carries data, else planned anew."""
        if scanned["plan"] is None:
            return plan_chunks(inputs, chunk_bytes)
        return (Chunk(**{**spec, "path": Path(spec["path"])}) for spec in scanned["plan"])

    numbers = list(range(scanned["chunks"]))
    keys = dedup_keys(config.near_dup_threshold) if config.near_dup_threshold else None
    decided = decide(work, numbers, config, len(keys.bands) if keys else 0)
    lap("decide")
    personas_path = None
    if config.personas != "none" or config.persona_filter:
        personas_path = personas(config, work, workers, chunks, numbers, decided["partitions"])
        lap("personas")
    if config.intents == "llm":
        ask_llm_intents(config, work, chunks, personas_path)
        lap("llm_intents")
    emitted = emit(config, work, workers, chunks, decided["kept"], personas_path, notes)
    lap("write")
    written = assemble(config, work, numbers, emitted)
    lap("assemble")
    return stats_of(config, scanned, decided, emitted, written)


def scan_job(chunk: Chunk, config: PrepConfig, work: Work) -> dict:
    keys = dedup_keys(config.near_dup_threshold) if config.near_dup_threshold else dedup_keys(0)
    summary = scan_chunk(chunk, config, work, keys)
    return {**summary, "number": chunk.number, "path": str(chunk.path)}


def scan(config: PrepConfig, work: Work, workers: Workers, chunks, notes: list[str]) -> dict:
    """Pass 1 over every chunk not scanned yet; the totals over all chunks."""
    marker = work.root / "scanned.json"
    if marker.exists():
        return json.loads(marker.read_text())
    work.stage_folder("scan")
    totals = {
        "read": 0,
        "rejected": Counter(),
        "filtered": Counter(),
        "repairs": Counter(),
        "chunks": 0,
        "records": Counter(),
        "formats": {},
    }
    plan: list[dict] | None = []  # the chunks, kept when none carries data (so later passes need not re-plan)
    skipped = 0

    def add(summary: dict) -> None:
        totals["read"] += summary["read"]
        totals["records"][summary["path"]] += summary["read"]
        for name in ("rejected", "filtered", "repairs"):
            totals[name].update(summary[name])
        for fmt in summary["formats"]:
            totals["formats"][summary["path"]] = fmt
        progress.update(summary["read"])

    def todo():
        nonlocal skipped, plan
        for chunk in chunks():
            totals["chunks"] = chunk.number + 1
            if chunk.data is not None:
                plan = None
            elif plan is not None:
                plan.append(chunk.spec())
            done = work.done("scan", chunk.number)
            if done is not None:
                skipped += 1
                add({**done, "path": str(chunk.path)})
            else:
                yield chunk, config, work

    with Progress("scan", None, config.progress) as progress:
        workers.run(scan_job, todo(), add)
    if skipped:
        notes.append(f"scan: {skipped} of {totals['chunks']} chunks were done before the interruption")
    result = {
        **totals,
        **{name: dict(totals[name]) for name in ("rejected", "filtered", "repairs", "records")},
        "plan": plan,
    }
    write_json(marker, result)
    return result


def group_job(chunk: Chunk, config: PrepConfig, work: Work, partitions: int) -> dict:
    return group_users(chunk, config, work, partitions)


def personas_job(partition: int, numbers: list[int], config: PrepConfig, work: Work) -> dict:
    endpoint = None
    if config.personas == "llm":
        from .fleet import endpoint_of

        endpoint = endpoint_of(
            config.persona_endpoint_url,
            config.persona_model_name,
            timeout=config.endpoint_timeout,
            concurrency=config.endpoint_concurrency,
        )
    return personas_of_partition(partition, numbers, config, work, endpoint)


def personas(config: PrepConfig, work: Work, workers: Workers, chunks, numbers: list[int], partitions: int) -> Path:
    """Per-user personas of every kept record, in a table keyed by conversation id."""
    work.stage_folder("users")
    work.stage_folder("personas")
    todo = ((chunk, config, work, partitions) for chunk in chunks() if work.done("users", chunk.number) is None)
    with Progress("grouping users", None, config.progress) as progress:
        workers.run(group_job, todo, lambda summary: progress.update(summary["records"]))
    jobs = ((p, numbers, config, work) for p in range(partitions) if work.done("personas", p) is None)
    with Progress("personas", None, config.progress) as progress:
        # An LLM is asked from this process alone, so its concurrency stays the one asked for.
        workers.run(
            personas_job, jobs, lambda summary: progress.update(summary["records"]), parallel=config.personas != "llm"
        )
    return PersonaTable.build(work, partitions)


def ask_llm_intents(config: PrepConfig, work: Work, chunks, personas_path: Path | None) -> None:
    """Every kept record's intent request, streamed to the endpoint(s) from this process."""
    from .fleet import endpoint_of
    from .kept import kept_records
    from .llm_intents import ask_intents

    marker = work.root / "intents_asked.json"
    if marker.exists():
        return
    table = PersonaTable(personas_path) if personas_path else None

    def records():
        for chunk in chunks():
            if work.done("write", chunk.number) is not None:
                continue
            for record in kept_records(chunk, work):
                if table is not None:
                    _, _, failure, selected = table.get(record["conversation_id"])
                    if failure or not selected:
                        continue
                yield record

    endpoint = endpoint_of(
        config.intent_endpoint,
        config.intent_model,
        timeout=config.endpoint_timeout,
        concurrency=config.endpoint_concurrency,
    )
    counts = ask_intents(records(), endpoint, work.staged / "intent_cache.sqlite", progress=config.progress)
    write_json(marker, counts)


def emit_job(chunk: Chunk, config: PrepConfig, work: Work, personas_path: Path | None) -> dict:
    table = PersonaTable(personas_path) if personas_path else None
    return {**emit_chunk(chunk, config, work, table), "number": chunk.number}


def emit(
    config: PrepConfig, work: Work, workers: Workers, chunks, kept: int, personas_path: Path | None, notes: list[str]
) -> dict:
    work.stage_folder("write")
    totals = {
        "kept": 0,
        "filtered": Counter(),
        "rejected": Counter(),
        "splits": {split: Counter() for split in SPLITS},
        "users": {split: set() for split in SPLITS},
    }
    skipped = 0

    def add(summary: dict) -> None:
        totals["kept"] += summary["kept"]
        totals["filtered"].update(summary["filtered"])
        totals["rejected"].update(summary["rejected"])
        for split in SPLITS:
            counts = summary["splits"][split]
            longest = max(totals["splits"][split]["longest_line_chars"], counts["longest_line_chars"])
            totals["splits"][split].update({k: v for k, v in counts.items() if k != "longest_line_chars"})
            totals["splits"][split]["longest_line_chars"] = longest
            totals["users"][split].update(summary["users"][split])
        progress.update(summary["kept"] + sum(summary["filtered"].values()) + sum(summary["rejected"].values()))

    def todo():
        nonlocal skipped
        for chunk in chunks():
            done = work.done("write", chunk.number)
            if done is not None:
                skipped += 1
                add(done)
            else:
                yield chunk, config, work, personas_path

    with Progress("write", kept, config.progress) as progress:
        workers.run(emit_job, todo(), add)
    if skipped:
        notes.append(f"write: {skipped} chunks were done before the interruption")
    splits = {
        split: {
            "conversations": totals["splits"][split]["conversations"],
            "users": len(totals["users"][split]),
            "samples": totals["splits"][split]["samples"],
            "end_samples": totals["splits"][split]["end_samples"],
            "longest_line_chars": totals["splits"][split]["longest_line_chars"],
        }
        for split in SPLITS
    }
    return {
        "kept": totals["kept"],
        "filtered": dict(totals["filtered"]),
        "rejected": dict(totals["rejected"]),
        "splits": splits,
    }


def concatenate(target: Path, parts: list[Path]) -> None:
    with atomic_open(target, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, sink, 16 * MB)


def assemble(config: PrepConfig, work: Work, numbers: list[int], emitted: dict) -> dict[str, str]:
    """The output files in the staged folder, each the chunks' parts in chunk order."""
    staged = work.staged
    names = {
        "conversations": "conversations.jsonl",
        "rejected": "rejected.jsonl",
        "stats": "stats.json",
        **{split: f"{split}.jsonl.gz" for split in SPLITS},
    }
    concatenate(staged / names["conversations"], [work.file("write", n, ".conversations.jsonl") for n in numbers])
    for split in SPLITS:
        concatenate(staged / names[split], [work.file("write", n, f".{split}.jsonl.gz") for n in numbers])
    # Rejections in the order they were found: reading, then personas, then intents.
    concatenate(
        staged / names["rejected"],
        [work.file("scan", n, ".rejected.jsonl") for n in numbers]
        + [work.file("write", n, ".persona-rejected.jsonl") for n in numbers]
        + [work.file("write", n, ".intent-rejected.jsonl") for n in numbers],
    )
    if config.hf:
        shutil.rmtree(staged / "hf", ignore_errors=True)
        save_hf(
            {split: staged / names[split] for split in SPLITS},
            {split: emitted["splits"][split]["samples"] for split in SPLITS},
            staged / "hf",
            work.root / "hf-cache",
        )
        names["hf"] = "hf"
    for cache in ("intent_cache.sqlite", "persona_cache.sqlite"):
        if (staged / cache).exists():
            names[cache.removesuffix(".sqlite")] = cache
    out = Path(config.out).resolve()
    return {name: str(out / file) for name, file in names.items()}


def stats_of(config: PrepConfig, scanned: dict, decided: dict, emitted: dict, written: dict) -> dict:
    filtered = {name: scanned["filtered"].get(name, 0) for name in applied_filters(config)}
    if config.exact_dedup:
        filtered["exact_duplicate"] = decided["exact_duplicate"]
    if config.near_dup_threshold:
        filtered["near_duplicate"] = decided["near_duplicate"]
    if config.persona_filter:
        filtered["persona_filter"] = emitted["filtered"].get("persona_filter", 0)
    rejected = Counter(scanned["rejected"]) + Counter(emitted["rejected"])
    repairs = Counter(scanned["repairs"])
    repairs["renamed_duplicate_id"] += decided["renamed_duplicate_id"]
    stats = {
        "inputs": [
            {
                "path": str(path),
                "format": scanned["formats"].get(str(path)),
                "records": scanned["records"].get(str(path), 0),
            }
            for path in config.inputs
        ],
        "read": scanned["read"],
        "kept": emitted["kept"],
        "rejected": dict(sorted(rejected.items())),
        "filtered": filtered,
        "repairs": dict(sorted((name, count) for name, count in repairs.items() if count)),
        "splits": emitted["splits"],
        "intents": config.intents,
        "personas": config.personas,
        "config": {key: value for key, value in to_dict(config).items() if key not in RUN_ONLY_OPTIONS},
        "written": written,
    }
    accounted = stats["kept"] + sum(rejected.values()) + sum(filtered.values())
    if accounted != stats["read"]:
        raise AssertionError(f"prep lost records: read {stats['read']}, accounted for {accounted}")
    return stats


def nothing_kept(stats: dict) -> str | None:
    """One sentence when no conversation was kept: which filters and rejections removed them."""
    if stats["kept"]:
        return None
    removed = [(f"{name} filter", count) for name, count in stats["filtered"].items() if count]
    removed += [(f"rejected as {reason}", count) for reason, count in stats["rejected"].items() if count]
    removed.sort(key=lambda item: -item[1])
    causes = "; ".join(f"{name}: {count}" for name, count in removed)
    return (
        f"No conversation was kept: of {stats['read']} records read, prep removed them by ({causes}); "
        f"loosen those options (counts in {stats['written']['stats']}) and run `userlm prep` again."
    )


def prep_summary(result: PrepResult) -> Summary:
    """Where the records went (rejected by reason, filtered by filter, kept by split) and the files."""
    stats = result.stats
    rows: list[tuple] = [("rejected", reason, count) for reason, count in sorted(stats["rejected"].items())]
    rows += [("filtered", name, count) for name, count in stats["filtered"].items()]
    rows += [
        ("kept", split, f"{counts['conversations']} conversations, {counts['samples']} samples")
        for split, counts in stats["splits"].items()
    ]
    rows.append(("kept", "total", stats["kept"]))
    closing = (
        f"{stats['read']} read = {stats['kept']} kept + {sum(stats['rejected'].values())} rejected"
        f" + {sum(stats['filtered'].values())} filtered"
    )
    run = stats["run"]
    return Summary(
        title=f"userlm prep: {stats['read']} records read in {run['seconds']} s ({run['num_proc']} processes)",
        columns=("outcome", "reason / filter / split", "count"),
        rows=rows,
        notes=[closing, *result.notes],
        wrote=dict(result.written),
    )

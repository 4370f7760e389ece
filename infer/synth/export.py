"""The training set for an assistant, and its datasheet.

Roles are the assistant's: the simulator's turns are `user`, the assistant's `assistant`,
the assistant's system prompt (when the run had one) first as `system`; the turn in which
the user only leaves (the end marker) is not a message. Every row ends with an assistant
turn, so the whole conversation is a training example in TRL's conversational format
(`{"messages": [...]}`, which `SFTTrainer` reads and renders with the tokenizer's chat
template) and in OpenAI's fine-tuning format (one such object per JSONL line).

    train.jsonl          one {"messages": [...]} per kept conversation, in job order
    dataset/             the same rows as a `datasets` folder (`datasets.load_from_disk`); none when none is kept
    train.sharegpt.json  on request: [{"id", "conversations": [{"from": "system" | "human" | "gpt", "value"}]}]
    datasheet.json, .md  counts per filter, intents and personas used, models, seeds and settings
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from userlm.atomic import atomic_write, replace_folder, staging_folder, write_json, write_jsonl
from userlm.flipped.format import END_MARKER

from .filters import REASONS

SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def messages_of(record: dict) -> list[dict]:
    """The conversation as the assistant sees it, without the leaving turn."""
    system = record["assistant"].get("system")
    turns = [
        {"role": t["role"], "content": t["content"]} for t in record["turns"] if t["content"].strip() != END_MARKER
    ]
    return [{"role": "system", "content": system}, *turns] if system else turns


def write_training_set(out: Path, kept: list[dict], *, sharegpt: bool) -> dict[str, str]:
    """train.jsonl, dataset/ and (on request) train.sharegpt.json from the kept records; their paths."""
    from datasets import Dataset, Features, List, Value

    rows = [{"messages": messages_of(record)} for record in kept]
    write_jsonl(out / "train.jsonl", rows)
    files = {"train": str(out / "train.jsonl")}
    if rows:  # datasets 5.2 saves a set of no rows that load_from_disk then fails to read: none is written
        features = Features({"messages": List({"role": Value("string"), "content": Value("string")})})
        staging = staging_folder(out / "dataset")
        Dataset.from_list(rows, features=features).save_to_disk(str(staging))
        replace_folder(staging, out / "dataset")
        files["dataset"] = str(out / "dataset")
    else:
        shutil.rmtree(out / "dataset", ignore_errors=True)  # an earlier run's set is not this one's
    if sharegpt:
        conversations = [
            {
                "id": record["conversation_id"],
                "conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in row["messages"]],
            }
            for record, row in zip(kept, rows)
        ]
        write_json(out / "train.sharegpt.json", conversations)
        files["sharegpt"] = str(out / "train.sharegpt.json")
    return files


def datasheet(records: list[dict], reasons: dict[str, str | None], settings: dict, judge: str | None) -> dict:
    """What the set is: counts per filter, intents and personas, models, seeds and settings."""
    kept = [r for r in records if reasons[r["conversation_id"]] is None]
    dropped = Counter(reasons[r["conversation_id"]] for r in records)
    first = records[0] if records else {"simulator": None, "assistant": None}
    return {
        "conversations_simulated": len(records),
        "dropped": {reason: dropped.get(reason, 0) for reason in REASONS},
        "kept": len(kept),
        "messages": sum(len(messages_of(r)) for r in kept),
        "termination_reasons": dict(Counter(r["termination_reason"] for r in records)),
        "intents": [
            {"intent": intent, "simulated": count, "kept": sum(1 for r in kept if r["intent"] == intent)}
            for intent, count in Counter(r["intent"] for r in records).items()
        ],
        "personas": [
            {"persona": persona, "simulated": count, "kept": sum(1 for r in kept if r["persona"] == persona)}
            for persona, count in Counter(r["persona"] for r in records).items()
        ],
        "simulator": first["simulator"],
        "assistant": first["assistant"],
        "judge": judge,
        "seed": settings["seed"],
        "conversation_seeds": [r["seed"] for r in records],
        "kept_conversation_ids": [r["conversation_id"] for r in kept],
        "settings": settings,
    }


def datasheet_markdown(sheet: dict, files: dict[str, str]) -> str:
    lines = [
        "# Datasheet: synthetic conversations for training an assistant",
        "",
        "Made by `userlm synth`: a user simulator talking with an assistant; the simulator's turns are the `user` "
        "messages, the assistant's the `assistant` messages.",
        "",
        "## Counts",
        "",
        "| | conversations |",
        "|---|---|",
        f"| simulated | {sheet['conversations_simulated']} |",
        *(f"| dropped: {reason} | {count} |" for reason, count in sheet["dropped"].items()),
        f"| **kept** | **{sheet['kept']}** ({sheet['messages']} messages) |",
        "",
        "Filters in the order applied: `userlm.infer.synth.filters` (docs/guide/synth.md).",
        "",
        "## Models and seeds",
        "",
        f"- simulator: `{sheet['simulator']}`",
        f"- assistant: `{sheet['assistant']}`",
        f"- judge: {sheet['judge'] or 'none'}",
        f"- base seed {sheet['seed']}; each conversation's seed is derived from it, its intent, persona and trial "
        "(all in datasheet.json)",
        "",
        f"## Intents ({len(sheet['intents'])})",
        "",
        "| intent | simulated | kept |",
        "|---|---|---|",
        *(f"| {cell(i['intent'])} | {i['simulated']} | {i['kept']} |" for i in sheet["intents"]),
        "",
        f"## Personas ({len([p for p in sheet['personas'] if p['persona']])})",
        "",
        "| persona | simulated | kept |",
        "|---|---|---|",
        *(f"| {cell(p['persona'] or '(none)')} | {p['simulated']} | {p['kept']} |" for p in sheet["personas"]),
        "",
        "## Files",
        "",
        *(f"- {name}: `{path}`" for name, path in files.items()),
        "",
        "Every setting of the run is under `settings` in datasheet.json.",
        "",
    ]
    return "\n".join(lines)


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def write_datasheet(out: Path, sheet: dict, files: dict[str, str]) -> None:
    atomic_write(out / "datasheet.md", datasheet_markdown(sheet, files))
    write_json(out / "datasheet.json", {**sheet, "files": files})  # last: its presence marks a finished run

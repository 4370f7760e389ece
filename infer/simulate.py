"""The simulation loop (DESIGN.md 6.3): intents (and personas) in, simulated conversations out.

Up to `batch_size` conversations are active at once. Each round, every active conversation
gets its next user turn from one batched simulator call, then every conversation still
going gets its assistant reply (the assistant answers them together: one batched
`generate`, or concurrent requests bounded by the endpoint). A finished conversation is
appended to the output as one JSON line and fsynced, and a waiting one takes its place.

Output, one JSON object per line:
    {"conversation_id", "intent", "persona", "trial", "seed",
     "simulator": {...settings}, "assistant": {...settings},
     "turns": [{"role": "user", "content", "events": [...]}, {"role": "assistant", "content"}, ...],
     "termination_reason": "user_ended" | "max_turns" | "assistant_error" | "simulator_error" | "guardrails_exhausted",
     "error": str | None, "exhausted_events": [...]}
A user who leaves has a last turn whose content is the end marker. Conversation ids and
seeds are derived from the intent, persona and trial, so a rerun with the same output file
skips the conversations already written (a torn last line from a kill is cut off first)
and reproduces the same seeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from userlm.data_prep.format import END_MARKER, system_text
from userlm.errors import UserError

from .guardrails import Guardrails
from .sampling import derive_seed

TERMINATION_REASONS = ("user_ended", "max_turns", "assistant_error", "simulator_error", "guardrails_exhausted")


@dataclass
class Job:
    conversation_id: str
    intent: str
    persona: str | None
    trial: int
    seed: int


@dataclass
class Conversation:
    job: Job
    assistant_system: str | None
    turns: list[dict] = field(default_factory=list)
    termination_reason: str | None = None
    error: str | None = None
    exhausted_events: list[dict] = field(default_factory=list)

    @property
    def user_turns(self) -> int:
        return sum(1 for t in self.turns if t["role"] == "user")

    def simulator_prompt(self) -> list[dict]:
        """The flipped prompt: the intent (and persona) as system message, then the turns so far."""
        system = {"role": "system", "content": system_text(self.job.intent, self.job.persona)}
        return [system, *({"role": t["role"], "content": t["content"]} for t in self.turns)]

    def assistant_messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.assistant_system}] if self.assistant_system else []
        return [*system, *({"role": t["role"], "content": t["content"]} for t in self.turns)]

    def finish(self, reason: str, error: str | None = None) -> None:
        self.termination_reason = reason
        self.error = error


def read_inputs(path: Path, key: str) -> list[str]:
    """Intents or personas: a JSONL file of objects with `key` (conversation records and
    samples work), or a text file with one per line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"No {key} file at {path}; check the path.")
    values = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                value = json.loads(line)[key]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"Line {number} of {path} is not a JSON object with a {key!r} field; fix or remove it.") from None
        else:
            value = line.strip()
        if value and value not in values:
            values.append(value)
    if not values:
        raise UserError(f"{path} holds no {key}s; write one per line (or JSONL objects with {key!r}).")
    return values


def make_jobs(intents: list[str], personas: list[str | None], n_per_intent: int, seed: int) -> list[Job]:
    """Every intent with every persona, `n_per_intent` trials each, with ids and seeds stable across runs."""
    jobs = []
    for intent in intents:
        for persona in personas:
            key = hashlib.sha1(f"{intent}\n\n{persona or ''}".encode()).hexdigest()[:12]
            for trial in range(n_per_intent):
                conversation_id = f"{key}-{trial}"
                jobs.append(Job(conversation_id, intent, persona, trial, derive_seed(seed, int(key, 16), trial)))
    return jobs


def finished_ids(out_file: Path) -> set[str]:
    """Ids already written; a torn last line (a killed run) is cut off so appends stay valid JSONL."""
    if not out_file.exists():
        return set()
    data = out_file.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):
        with open(out_file, "r+b") as handle:
            handle.truncate(good_end)
        print(f"Cut off a torn last line of {out_file} ({len(data) - good_end} bytes, an interrupted write).")
    ids = set()
    for number, line in enumerate(data[:good_end].splitlines(), 1):
        try:
            ids.add(json.loads(line)["conversation_id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            print(f"Line {number} of {out_file} is not a conversation record; it is kept, and ignored for resuming.")
    return ids


def record_of(conversation: Conversation, simulator_settings: dict, assistant_settings: dict) -> dict:
    job = conversation.job
    return {
        "conversation_id": job.conversation_id,
        "intent": job.intent,
        "persona": job.persona,
        "trial": job.trial,
        "seed": job.seed,
        "simulator": simulator_settings,
        "assistant": assistant_settings,
        "turns": conversation.turns,
        "termination_reason": conversation.termination_reason,
        "error": conversation.error,
        "exhausted_events": conversation.exhausted_events,
    }


def append_record(sink, record: dict) -> None:
    # One line per finished conversation, on disk before the next: a kill loses at most the line being written.
    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    sink.flush()
    os.fsync(sink.fileno())


def summarise(records: list[dict], skipped: int, out_file: Path) -> dict:
    reasons = Counter(r["termination_reason"] for r in records)
    rejections = Counter(
        e["guardrail"]
        for r in records
        for e in [*(e for t in r["turns"] for e in t.get("events", [])), *r["exhausted_events"]]
    )
    return {
        "conversations": len(records),
        "skipped_already_done": skipped,
        "turns": sum(len(r["turns"]) for r in records),
        "user_turns": sum(1 for r in records for t in r["turns"] if t["role"] == "user"),
        "termination_reasons": {reason: reasons.get(reason, 0) for reason in TERMINATION_REASONS},
        "guardrail_events": dict(sorted(rejections.items())),
        "out": str(out_file),
    }


async def simulate_async(
    simulator,
    assistant,
    jobs: list[Job],
    out_file: Path,
    *,
    max_turns: int,
    guardrails: Guardrails | None = None,
    batch_size: int = 16,
    assistant_system: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 0.8,
    progress: bool = True,
) -> dict:
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out_file)
    waiting = [job for job in jobs if job.conversation_id not in done]
    skipped = len(jobs) - len(waiting)
    simulator_settings = {
        **simulator.settings,
        "guardrails": guardrails.as_dict() if guardrails else None,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "max_turns": max_turns,
    }
    options = {"guardrails": guardrails, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    written: list[dict] = []
    active: list[Conversation] = []
    counts: Counter = Counter()
    bar = tqdm(total=len(jobs), initial=skipped, desc="conversations", unit="conv", disable=not progress)
    with open(out_file, "a", encoding="utf-8") as sink:
        while waiting or active:
            while waiting and len(active) < batch_size:
                active.append(Conversation(waiting.pop(0), assistant_system))
            await user_step(simulator, active, options)
            await assistant_step(assistant, [c for c in active if c.termination_reason is None], max_turns)
            for conversation in [c for c in active if c.termination_reason is not None]:
                record = record_of(conversation, simulator_settings, assistant.settings)
                append_record(sink, record)
                written.append(record)
                counts[conversation.termination_reason] += 1
                bar.update(1)
            active = [c for c in active if c.termination_reason is None]
            bar.set_postfix(dict(counts), refresh=True)
    bar.close()
    return summarise(written, skipped, out_file)


async def user_step(simulator, active: list[Conversation], options: dict) -> None:
    """The next user turn of every active conversation, from one batched simulator call."""
    seeds = [derive_seed(c.job.seed, c.user_turns) for c in active]
    try:
        turns = await simulator.agenerate([c.simulator_prompt() for c in active], seed=seeds, **options)
    except Exception as error:  # the batch failed: each of its conversations records why
        turns = [error] * len(active)
    for conversation, turn in zip(active, turns):
        if isinstance(turn, Exception):
            conversation.finish("simulator_error", f"{type(turn).__name__}: {turn}")
        elif turn.exhausted:
            conversation.exhausted_events = turn.events
            conversation.finish("guardrails_exhausted")
        else:
            conversation.turns.append({"role": "user", "content": turn.text, "events": turn.events})
            if turn.is_end:
                conversation.finish("user_ended")


async def assistant_step(assistant, going: list[Conversation], max_turns: int) -> None:
    replies = await assistant.reply([c.assistant_messages() for c in going])
    for conversation, reply in zip(going, replies):
        if isinstance(reply, Exception):
            conversation.finish("assistant_error", f"{type(reply).__name__}: {reply}")
            continue
        conversation.turns.append({"role": "assistant", "content": reply})
        if conversation.user_turns >= max_turns:
            conversation.finish("max_turns")


def simulate(simulator, assistant, jobs: list[Job], out_file: Path, **options) -> dict:
    """Run the loop to the end and close the clients; see `simulate_async` for the options."""

    async def run() -> dict:
        try:
            return await simulate_async(simulator, assistant, jobs, out_file, **options)
        finally:
            await assistant.aclose()
            if hasattr(simulator, "aclose"):
                await simulator.aclose()

    return asyncio.run(run())


def print_summary(summary: dict) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in summary["termination_reasons"].items() if v) or "none"
    events = ", ".join(f"{k} {v}" for k, v in summary["guardrail_events"].items()) or "none"
    print(
        f"Simulated {summary['conversations']} conversations ({summary['skipped_already_done']} already done, skipped), "
        f"{summary['turns']} turns ({summary['user_turns']} user).\n"
        f"Termination: {reasons}.\nGuardrail events: {events}.\nWrote {summary['out']}."
    )


def print_transcript(record: dict) -> None:
    print(f"--- {record['conversation_id']} ({record['termination_reason']})\nintent: {record['intent']}")
    for turn in record["turns"]:
        content = "[leaves the conversation]" if turn["content"] == END_MARKER else turn["content"]
        print(f"{turn['role']:>9}: {content}")

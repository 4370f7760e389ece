"""The simulation loop (docs/design.md#the-simulation-loop): intents (and personas) in, simulated conversations out.

Up to `batch_size` conversations are active at once. Each round, every active conversation
gets its next user turn from one batched simulator call, then every conversation still
going gets its assistant reply (the assistant answers them together: one batched
`generate`, or concurrent requests bounded by the endpoint). A finished conversation is
appended to the output as one JSON line and fsynced, and a waiting one takes its place.

Output, one JSON object per line:
    {"conversation_id", "intent", "persona", "trial", "seed",
     "simulator": {...settings}, "assistant": {...settings},
     "turns": [{"role": "user", "content", "events": [...], "p_end", "p_end_steered"?},
               {"role": "assistant", "content"}, ...],
     "termination_reason": "user_ended" | "max_turns" | "assistant_error" | "simulator_error" | "guardrails_exhausted",
     "error": str | None, "exhausted_events": [...], "seconds": float}
A user who leaves has a last turn whose content is the end marker. Each user turn records
`p_end`, the simulator's probability of leaving at that turn (null where the backend cannot
read it), and `p_end_steered` where an end bias changed it (`infer/turn_sampling.py`). A conversation's seed
is derived from the base seed, its intent, persona and trial; its id hashes those and
everything else that decides what it says (the seed, every simulator and assistant
setting, the guardrails, the sampling and end steering, the turn limit), so a rerun of the same
configuration into the same file skips the conversations already finished, and a run of
another configuration never takes them for its own. `infer/simulate_output.py` checks,
resumes and appends to the output file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from userlm.config import to_dict
from userlm.errors import UserError
from userlm.flipped.format import END_MARKER, count_user_turns, system_text
from userlm.flipped.samples import open_lines
from userlm.summary import Summary

from .config import AssistantOptions, SimulateConfig, SimulatorOptions
from .guardrails import Guardrails
from .sampling import derive_seed
from .simulate_output import (
    RETRIED_REASONS,
    SimulatedConversation,
    append_record,
    check_output_file,
    open_output,
    prepare_resume,
)
from .turn_sampling import DEFAULT_SAMPLING, TurnSampling, unsteerable_error

if TYPE_CHECKING:
    from .backend import SimulatorBackend

TERMINATION_REASONS = ("user_ended", "max_turns", "assistant_error", "simulator_error", "guardrails_exhausted")


@dataclass
class Job:
    key: str  # the intent, persona and trial; the same in every run
    intent: str
    persona: str | None
    trial: int
    seed: int


@dataclass
class Conversation:
    job: Job
    conversation_id: str
    assistant_system: str | None
    turns: list[dict] = field(default_factory=list)
    termination_reason: str | None = None
    error: str | None = None
    exhausted_events: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def user_turns(self) -> int:
        return count_user_turns(self.turns)

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


def read_inputs(source: Path | list[str], key: str) -> list[str]:
    """Intents or personas, each once, in order: a list of them, a JSONL file of objects with
    `key` (conversation records and samples work), or a text file with one per line."""
    if isinstance(source, (list, tuple)):
        values = [value.strip() for value in source]
    else:
        values = read_input_file(Path(source), key)
    values = [value for value in dict.fromkeys(values) if value]
    if not values and isinstance(source, (list, tuple)):
        raise UserError(f"Every {key} in the list of {key}s is empty; give at least one.")
    if not values:
        raise UserError(f"{source} holds no {key}s; write one per line (or JSONL objects with {key!r}).")
    return values


def read_input_file(path: Path, key: str) -> list[str]:
    """One value per line of a text file, or the `key` field of each line of a JSONL (or JSONL.gz) file."""
    if not path.is_file():
        raise UserError(f"No {key} file at {path}; check the path.")
    is_json = path.name.endswith((".jsonl", ".jsonl.gz"))
    values = []
    try:
        for number, line in open_lines(path):
            if not line.strip():
                continue
            if not is_json:
                values.append(line.strip())
                continue
            try:
                value = json.loads(line)[key]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(
                    f"Line {number} of {path} is not a JSON object with a {key!r} field; fix or remove it."
                ) from None
            if not isinstance(value, str):
                raise UserError(f"Line {number} of {path} has a {key!r} that is not a text; fix or remove it.")
            values.append(value.strip())
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise UserError(
            f"{path} is not a readable UTF-8 text or JSONL file ({error.__class__.__name__}); pass a {key} file."
        ) from None
    return values


def make_jobs(intents: list[str], personas: list[str | None], n_per_intent: int, seed: int) -> list[Job]:
    """Every intent with every persona, `n_per_intent` trials each, with seeds stable across runs."""
    jobs = []
    for intent in intents:
        for persona in personas:
            key = hashlib.sha1(f"{intent}\n\n{persona or ''}".encode()).hexdigest()[:12]
            for trial in range(n_per_intent):
                jobs.append(Job(f"{key}-{trial}", intent, persona, trial, derive_seed(seed, int(key, 16), trial)))
    return jobs


def conversation_id(job: Job, simulator_settings: dict, assistant_settings: dict) -> str:
    """The job's key and a hash of everything else that decides the conversation: its seed and
    every simulator and assistant setting (guardrails, sampling and turn limit included)."""
    run = json.dumps([job.seed, simulator_settings, assistant_settings], sort_keys=True, ensure_ascii=False)
    return f"{job.key}-{hashlib.sha1(run.encode()).hexdigest()[:10]}"


def record_of(conversation: Conversation, simulator_settings: dict, assistant_settings: dict) -> SimulatedConversation:
    job = conversation.job
    return {
        "conversation_id": conversation.conversation_id,
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
        # Wall time from its first turn to its last (it shared each batch with others): a JUnit case's time.
        "seconds": round(time.monotonic() - conversation.started, 3),
    }


def summarise(
    records: list[SimulatedConversation], skipped: int, retried: int, out_file: Path, conversation_ids: list[str]
) -> dict:
    reasons = Counter(r["termination_reason"] for r in records)
    rejections = Counter(
        e["guardrail"]
        for r in records
        for e in [*(e for t in r["turns"] for e in t.get("events", [])), *r["exhausted_events"]]
    )
    return {
        "conversations": len(records),
        "skipped_already_done": skipped,
        "retried_failed": retried,
        "turns": sum(len(r["turns"]) for r in records),
        "user_turns": sum(count_user_turns(r["turns"]) for r in records),
        "termination_reasons": {reason: reasons.get(reason, 0) for reason in TERMINATION_REASONS},
        "guardrail_events": dict(sorted(rejections.items())),
        "out": str(out_file),
        # Every conversation of this run, done now or before, in job order.
        "conversation_ids": conversation_ids,
    }


def simulator_settings(
    simulator: SimulatorBackend, guardrails: Guardrails | None, sampling: TurnSampling, **more
) -> dict:
    """What a record says the simulator was and how it drew its turns (conversation ids hash it)."""
    return {**simulator.settings, "guardrails": to_dict(guardrails), **sampling.settings(), **more}


async def simulate_async(
    simulator: SimulatorBackend,
    assistant,
    jobs: list[Job],
    out_file: Path,
    *,
    max_turns: int,
    guardrails: Guardrails | None = None,
    sampling: TurnSampling = DEFAULT_SAMPLING,
    batch_size: int = 16,
    assistant_system: str | None = None,
    retry_failed: bool = True,
    progress: bool = True,
) -> dict:
    out_file = Path(out_file)
    settings = simulator_settings(simulator, guardrails, sampling, max_turns=max_turns)
    assistant_settings = {**assistant.settings, "system": assistant_system}
    ids = {id(job): conversation_id(job, settings, assistant_settings) for job in jobs}
    done, retried = prepare_resume(out_file, set(ids.values()), retry_failed=retry_failed)
    waiting = [job for job in jobs if ids[id(job)] not in done]
    skipped = len(jobs) - len(waiting)
    options = {"guardrails": guardrails, "sampling": sampling}
    written: list[SimulatedConversation] = []
    active: list[Conversation] = []
    counts: Counter = Counter()
    bar = tqdm(total=len(jobs), initial=skipped, desc="conversations", unit="conv", disable=not progress)
    with open_output(out_file) as sink:
        while waiting or active:
            while waiting and len(active) < batch_size:
                job = waiting.pop(0)
                active.append(Conversation(job, ids[id(job)], assistant_system))
            await user_step(simulator, active, options)
            await assistant_step(assistant, [c for c in active if c.termination_reason is None], max_turns)
            for conversation in [c for c in active if c.termination_reason is not None]:
                record = record_of(conversation, settings, assistant_settings)
                append_record(sink, record)
                written.append(record)
                counts[conversation.termination_reason] += 1
                bar.update(1)
            active = [c for c in active if c.termination_reason is None]
            bar.set_postfix(dict(counts), refresh=True)
    bar.close()
    return summarise(written, skipped, retried, out_file, [ids[id(job)] for job in jobs])


async def user_step(simulator: SimulatorBackend, active: list[Conversation], options: dict) -> None:
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
            conversation.turns.append(
                {"role": "user", "content": turn.text, "events": turn.events, **turn.end_probabilities()}
            )
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


def simulate(simulator: SimulatorBackend, assistant, jobs: list[Job], out_file: Path, **options) -> dict:
    """Run the loop to the end and close the clients; see `simulate_async` for the options."""

    async def run() -> dict:
        try:
            return await simulate_async(simulator, assistant, jobs, out_file, **options)
        finally:
            await assistant.aclose()
            if hasattr(simulator, "aclose"):
                await simulator.aclose()

    return asyncio.run(run())


def load_simulator(
    options: SimulatorOptions,
    *,
    timeout: float = 60.0,
    max_retries: int = 4,
    concurrency: int = 8,
    deferred: bool = False,
) -> SimulatorBackend:
    """The simulator the options name: a local model, or the completions endpoint that serves it
    (with the endpoint's request limits). `deferred`: a local model loads on first use (`infer/deferred.py`).
    Refuses, with one sentence, end steering the completions server cannot do."""
    if options.simulator_endpoint:
        from userlm.endpoint import Endpoint

        from .completions import CompletionsSimulator

        endpoint = Endpoint(
            base_url=options.simulator_endpoint,
            model=options.simulator_model or options.simulator,
            timeout=timeout,
            max_retries=max_retries,
            max_concurrency=concurrency,
        )
        simulator = CompletionsSimulator(
            endpoint, options.simulator, server=options.simulator_server, template=options.template
        )
        error = simulator.steering_error(options.sampling())
        if error is not None:
            raise error
        return simulator
    from .deferred import Deferred, local_simulator_settings
    from .simulator import UserSimulator

    # The name is what conversation ids and records say the simulator was: the base and its adapter.
    name = options.simulator if options.adapter is None else f"{options.simulator} + adapter {options.adapter}"

    def load():
        simulator = UserSimulator.load(options.simulator, template=options.template, adapter=options.adapter)
        simulator.name = name
        return simulator

    if not deferred:
        simulator = load()
        error = unsteerable_error(options.sampling(), simulator.end_token_id)
        if error is not None:
            raise error
        return simulator
    settings = local_simulator_settings(name, options.simulator, options.template, options.adapter)
    return load() if settings is None else Deferred(settings, load)


def hide_loading_bars() -> None:
    """`--no-progress` quiets transformers' own bars too ("Loading weights"), through its switch for them."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def check_intents_fit(simulator: SimulatorBackend, jobs: list[Job], max_new_tokens: int) -> None:
    """One sentence, before anything runs, for an intent (with its persona) that leaves the
    simulator no room in its context to write a turn: otherwise every conversation of it would fail."""
    seen = set()
    for job in jobs:
        if (job.intent, job.persona) in seen:
            continue
        seen.add((job.intent, job.persona))
        error = simulator.prompt_error(Conversation(job, job.key, None).simulator_prompt(), max_new_tokens)
        if error is not None:
            preview = " ".join(job.intent.split()[:6])
            with_persona = " with its persona" if job.persona else ""
            raise UserError(
                f"The intent '{preview} ...'{with_persona} does not fit: {str(error)[0].lower()}{str(error)[1:]}"
            )


def load_assistant(options: AssistantOptions, *, deferred: bool = False):
    """The assistant under test; `deferred`: a local model (hf:PATH) loads on first use (`infer/deferred.py`)."""
    from .assistants import LocalAssistant, make_assistant

    if deferred and options.assistant.startswith("hf:"):
        from .deferred import Deferred

        path = options.assistant[3:]
        settings = {"kind": "hf", "path": path, "max_tokens": options.assistant_max_tokens, "do_sample": False}
        return Deferred(settings, lambda: LocalAssistant(path, max_tokens=options.assistant_max_tokens))
    return make_assistant(
        options.assistant,
        model=options.assistant_model,
        api_key_env=options.assistant_key_env,
        timeout=options.timeout,
        max_retries=options.max_retries,
        max_concurrency=options.concurrency,
        max_tokens=options.assistant_max_tokens,
    )


def run_simulation(config: SimulateConfig) -> dict:
    """`userlm simulate`: every intent with every persona, `n_per_intent` conversations each,
    against the assistant; appends to `config.out` and returns the summary (`summarise`)."""
    intents = read_inputs(config.intents, "intent")
    personas = read_inputs(config.personas, "persona") if config.personas is not None else [None]
    check_output_file(config.out, inputs=(config.intents, config.personas))
    jobs = make_jobs(intents, personas, config.n_per_intent, config.seed)
    if not config.progress:
        hide_loading_bars()
    sampling = config.sampling()
    simulator = load_simulator(
        config, timeout=config.timeout, max_retries=config.max_retries, concurrency=config.concurrency
    )
    check_intents_fit(simulator, jobs, sampling.max_new_tokens)
    assistant = load_assistant(config)
    return simulate(simulator, assistant, jobs, config.out, **loop_options(config, sampling))


def loop_options(config, sampling: TurnSampling) -> dict:
    """The loop's options from a `SimulateConfig` or a `SuiteConfig` (`userlm test`), which share these keys."""
    return {
        "max_turns": config.max_turns,
        "guardrails": config.guardrails,
        "sampling": sampling,
        "batch_size": config.batch_size,
        "assistant_system": config.assistant_system,
        "retry_failed": config.retry_failed,
        "progress": config.progress,
    }


def simulation_summary(summary: dict) -> Summary:
    """The closing table of a simulation: conversations, turns, how they ended, guardrail events."""
    rows: list[tuple] = [
        ("conversations simulated", summary["conversations"]),
        ("already done, skipped", summary["skipped_already_done"]),
        ("failed before, retried", summary["retried_failed"]),
        ("turns", summary["turns"]),
        ("user turns", summary["user_turns"]),
    ]
    rows += [(f"ended: {reason}", count) for reason, count in summary["termination_reasons"].items()]
    rows += [(f"guardrail event: {name}", count) for name, count in summary["guardrail_events"].items()]
    failed = {reason: summary["termination_reasons"].get(reason, 0) for reason in RETRIED_REASONS}
    notes = [
        f"{count} conversation(s) ended with {reason}: see their records' error; a rerun of this command retries them."
        for reason, count in failed.items()
        if count
    ]
    return Summary(
        title="userlm simulate", columns=("", "count"), rows=rows, notes=notes, wrote={"conversations": summary["out"]}
    )


def print_transcript(record: SimulatedConversation) -> None:
    print(f"--- {record['conversation_id']} ({record['termination_reason']})\nintent: {record['intent']}")
    for turn in record["turns"]:
        content = "[leaves the conversation]" if turn["content"] == END_MARKER else turn["content"]
        print(f"{turn['role']:>9}: {content}{end_probability_note(turn)}")


def end_probability_note(turn: dict) -> str:
    """A user turn's P(end) as a transcript shows it: "  [P(end) 0.031]", with the steered one where it differs."""
    if turn.get("p_end") is None:
        return ""
    steered = f", steered {turn['p_end_steered']:.3f}" if "p_end_steered" in turn else ""
    return f"  [P(end) {turn['p_end']:.3f}{steered}]"

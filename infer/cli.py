"""`userlm simulate` and `userlm chat`: thin shells over `infer.simulate.simulate` and `infer.chat.chat`."""

from __future__ import annotations

import argparse
from pathlib import Path

from userlm.errors import UserError

from .guardrails import DEFAULT_BANNED_FIRST_WORDS, FALLBACKS, Guardrails


def add_parser(subparsers) -> None:
    simulate = subparsers.add_parser(
        "simulate",
        help="simulate conversations between a user simulator and an assistant under test",
        description="Simulate conversations: for every intent (and persona), N conversations against the assistant; one JSON line each.",
    )
    add_simulator_arguments(simulate)
    simulate.add_argument("--assistant", required=True, help="endpoint base URL (http://.../v1), hf:PATH (hf:default for SmolLM2) or python:module:function")
    simulate.add_argument("--assistant-model", help="model name at the assistant endpoint")
    simulate.add_argument("--assistant-key-env", default="OPENAI_API_KEY", help="environment variable holding the assistant endpoint's API key")
    simulate.add_argument("--assistant-system", help="system prompt sent to the assistant")
    simulate.add_argument("--assistant-max-tokens", type=int, default=256)
    simulate.add_argument("--timeout", type=float, default=60.0, help="seconds per endpoint request")
    simulate.add_argument("--max-retries", type=int, default=4, help="retries per endpoint request (exponential backoff)")
    simulate.add_argument("--concurrency", type=int, default=8, help="endpoint requests in flight at once")
    simulate.add_argument("--intents", type=Path, required=True, help="text file (one intent per line) or JSONL with an 'intent' field")
    simulate.add_argument("--personas", type=Path, help="text file (one persona per line) or JSONL with a 'persona' field; every intent runs with every persona")
    simulate.add_argument("--n-per-intent", type=int, default=1)
    simulate.add_argument("--max-turns", type=int, default=8, help="user turns at most per conversation")
    simulate.add_argument("--batch-size", type=int, default=16, help="conversations active at once")
    simulate.add_argument("--out", type=Path, required=True, help="output JSONL; a rerun with the same file skips finished conversations")
    simulate.add_argument("--no-progress", action="store_true")
    simulate.set_defaults(run=run_simulate)

    chat = subparsers.add_parser(
        "chat",
        help="chat with a user simulator: you play the assistant",
        description="You type the assistant's messages, the simulator answers as the user; Ctrl-D ends.",
    )
    add_simulator_arguments(chat, endpoint=False)
    chat.add_argument("--intent", required=True)
    chat.add_argument("--persona")
    chat.add_argument("--max-turns", type=int)
    chat.add_argument("--out", type=Path, default=Path("outputs/chat.jsonl"), help="JSONL the transcript is appended to")
    chat.set_defaults(run=run_chat)


def add_simulator_arguments(parser: argparse.ArgumentParser, *, endpoint: bool = True) -> None:
    group = parser.add_argument_group("simulator")
    group.add_argument("--simulator", required=True, help="`userlm train` output folder, model folder, .gguf file, or 'default' (SmolLM2, prompted)")
    group.add_argument("--adapter", help="a LoRA adapter folder to apply to the --simulator model")
    group.add_argument("--template", help="flipped template name for an ordinary instruct model (e.g. chatml); default: the checkpoint's own")
    if endpoint:
        group.add_argument("--simulator-endpoint", help="serve the simulator from this completions endpoint (…/v1); --simulator then gives its tokenizer")
        group.add_argument("--simulator-model", help="model name at the simulator endpoint (default: the --simulator value)")
        group.add_argument("--simulator-server", default="transformers", choices=("transformers", "vllm", "llamacpp"))
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--max-new-tokens", type=int, default=64)
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--top-p", type=float, default=0.8)
    guard = parser.add_argument_group("guardrails (all on by default)")
    guard.add_argument("--no-guardrails", action="store_true", help="unguarded sampling")
    guard.add_argument("--banned-first-words", default=",".join(DEFAULT_BANNED_FIRST_WORDS), help="comma-separated; empty turns the filter off")
    guard.add_argument("--min-turns-before-end", default="2", help="user turns before the end marker is allowed, or 'never'")
    guard.add_argument("--min-words", type=int, default=3)
    guard.add_argument("--max-words", type=int, default=25)
    guard.add_argument("--no-repetition-filter", action="store_true")
    guard.add_argument("--max-attempts", type=int, default=4, help="drafts per turn before the fallback")
    guard.add_argument("--fallback", default="end", choices=FALLBACKS, help="end: stop the conversation (guardrails_exhausted); keep: use the last draft")


def guardrails_from(args) -> Guardrails | None:
    if args.no_guardrails:
        return None
    min_turns = args.min_turns_before_end
    if min_turns != "never":
        try:
            min_turns = int(min_turns)
        except ValueError:
            raise UserError("Set --min-turns-before-end to a whole number or 'never'.") from None
    return Guardrails(
        banned_first_words=tuple(w.strip() for w in args.banned_first_words.split(",") if w.strip()),
        min_turns_before_end=min_turns,
        min_words=args.min_words,
        max_words=args.max_words,
        filter_repetition=not args.no_repetition_filter,
        max_attempts=args.max_attempts,
        fallback=args.fallback,
    )


def simulator_from(args):
    if getattr(args, "simulator_endpoint", None):
        from userlm.endpoint import Endpoint

        from .completions import CompletionsSimulator

        endpoint = Endpoint(
            base_url=args.simulator_endpoint, model=args.simulator_model or args.simulator,
            timeout=args.timeout, max_retries=args.max_retries, max_concurrency=args.concurrency,
        )
        return CompletionsSimulator(endpoint, args.simulator, server=args.simulator_server, template=args.template)
    from .simulator import UserSimulator

    return UserSimulator.load(args.simulator, template=args.template, adapter=args.adapter)


def run_simulate(args) -> int:
    from .assistants import make_assistant
    from .simulate import make_jobs, print_summary, read_inputs, simulate

    if args.n_per_intent < 1 or args.max_turns < 1 or args.batch_size < 1:
        raise UserError("Set --n-per-intent, --max-turns and --batch-size to at least 1.")
    intents = read_inputs(args.intents, "intent")
    personas = read_inputs(args.personas, "persona") if args.personas else [None]
    guardrails = guardrails_from(args)
    jobs = make_jobs(intents, personas, args.n_per_intent, args.seed)
    assistant = make_assistant(
        args.assistant, model=args.assistant_model, api_key_env=args.assistant_key_env, timeout=args.timeout,
        max_retries=args.max_retries, max_concurrency=args.concurrency, max_tokens=args.assistant_max_tokens,
    )
    simulator = simulator_from(args)
    summary = simulate(
        simulator, assistant, jobs, args.out, max_turns=args.max_turns, guardrails=guardrails,
        batch_size=args.batch_size, assistant_system=args.assistant_system, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, progress=not args.no_progress,
    )
    print_summary(summary)
    return 0


def run_chat(args) -> int:
    from .chat import chat

    chat(
        simulator_from(args), args.intent, args.out, persona=args.persona, guardrails=guardrails_from(args),
        seed=args.seed, max_turns=args.max_turns, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p,
    )
    return 0

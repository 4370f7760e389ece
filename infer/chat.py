"""Interactive chat: the person at the keyboard plays the assistant, the simulator plays the user.

The simulator opens with its first user turn; each message typed is the assistant's reply.
Ctrl-D (end of input), Ctrl-C, a standard input that is closed, or the simulator's end
marker ends the chat, and the transcript is appended to the output file in the schema of
`userlm simulate`. Each user turn is shown with the simulator's P(end) at that turn (and the
steered one where an end bias changed it). A chat ended from the keyboard's side has termination_reason
"assistant_ended" (the one reason `simulate` never writes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ChatConfig
from .guardrails import Guardrails
from .sampling import derive_seed
from .simulate import (
    Conversation,
    Job,
    check_intents_fit,
    end_probability_note,
    load_simulator,
    record_of,
    simulator_settings,
    user_step,
)
from .simulate_output import append_record, check_output_file, open_output
from .turn_sampling import DEFAULT_SAMPLING, TurnSampling

if TYPE_CHECKING:
    from .backend import SimulatorBackend

# What reading a reply raises when the keyboard's side is gone: end of input, Ctrl-C, or a
# standard input that was closed (`input()` then raises RuntimeError "lost sys.stdin";
# reading a closed stream raises ValueError or OSError).
INPUT_GONE = (EOFError, KeyboardInterrupt, RuntimeError, ValueError, OSError)


def run_chat(config: ChatConfig, *, read: Callable[[str], str] = input, show: Callable[[str], None] = print) -> dict:
    """`userlm chat`: load the simulator the config names and chat with it."""
    check_output_file(config.out)
    sampling = config.sampling()
    simulator = load_simulator(config)
    check_intents_fit(simulator, [Job("chat", config.intent, config.persona, 0, 0)], sampling.max_new_tokens)
    return chat(
        simulator,
        config.intent,
        config.out,
        persona=config.persona,
        guardrails=config.guardrails,
        sampling=sampling,
        seed=config.seed,
        max_turns=config.max_turns,
        read=read,
        show=show,
    )


def chat(
    simulator: SimulatorBackend,
    intent: str,
    out_file: Path,
    *,
    persona: str | None = None,
    guardrails: Guardrails | None = None,
    sampling: TurnSampling = DEFAULT_SAMPLING,
    seed: int = 0,
    max_turns: int | None = None,
    read: Callable[[str], str] = input,
    show: Callable[[str], None] = print,
) -> dict:
    """Run one interactive conversation and return its record (also appended to `out_file`)."""
    conversation_id = f"chat-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    conversation = Conversation(Job(conversation_id, intent, persona, 0, derive_seed(seed)), conversation_id, None)
    options = {"guardrails": guardrails, "sampling": sampling}
    show("You are the assistant. Type each reply on one line; Ctrl-D ends the chat.")
    while conversation.termination_reason is None:
        try:
            asyncio.run(user_step(simulator, [conversation], options))
        except KeyboardInterrupt:  # Ctrl-C while the simulator writes: keep the turns so far
            conversation.finish("assistant_ended")
            break
        if conversation.termination_reason is not None:
            break
        show(f"user: {conversation.turns[-1]['content']}{end_probability_note(conversation.turns[-1])}")
        try:
            reply = read("assistant> ")
        except INPUT_GONE:
            conversation.finish("assistant_ended")
            break
        conversation.turns.append({"role": "assistant", "content": reply})
        if max_turns is not None and conversation.user_turns >= max_turns:
            conversation.finish("max_turns")
    if conversation.termination_reason == "user_ended":
        show(f"user: [leaves the conversation]{end_probability_note(conversation.turns[-1])}")
    elif conversation.termination_reason in ("guardrails_exhausted", "simulator_error"):
        show(f"The simulator stopped: {conversation.termination_reason} {conversation.error or ''}".rstrip())
    record = record_of(conversation, simulator_settings(simulator, guardrails, sampling), {"kind": "human"})
    out_file = Path(out_file)
    with open_output(out_file) as sink:
        append_record(sink, record)
    show(
        f"Saved the transcript ({conversation.user_turns} user turns, {conversation.termination_reason}) to {out_file}."
    )
    return record

"""The flipped dialogue format (docs/design.md#the-flipped-format): records, conditioning text and flipping.

Every other stage imports these names; nothing else defines them.

A conversation record (3.1) is a plain dict, one JSON object per line:

    {"conversation_id": str, "user_id": str | None, "source": str, "language": str | None,
     "messages": [{"role": "user" | "assistant", "content": str}, ...],
     "system": str | None, "intent": str, "intent_source": str,
     "persona": str | None, "persona_attrs": dict | None, "meta": dict}

`messages` is non-empty, strictly alternating and starts with `user`. `meta["ends"]`
is False when the log was cut mid-way (a ShareGPT part followed by another), which
suppresses the end sample.

A flipped sample (3.3) is TRL's conversational prompt-completion shape:

    {"prompt": [{"role": "system", ...}, {"role": "user", ...}, ...],
     "completion": [{"role": "user", "content": TARGET}],
     "conversation_id", "turn_index", "is_end", "split"}
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .records import ConversationRecord, FlippedSample

END_MARKER = "<|endconversation|>"
INTENT_PREFIX = "You are a user chatting with an assistant language model to"
ROLES = ("user", "assistant")
BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")

CONVERSATION_KEYS = (
    "conversation_id",
    "user_id",
    "source",
    "language",
    "messages",
    "system",
    "intent",
    "intent_source",
    "persona",
    "persona_attrs",
    "meta",
)


def system_text(intent: str, persona: str | None = None) -> str:
    """The simulator's system message: the intent, then a blank line and the persona block.

    A blank line inside the intent is folded to a single line break, so that the first
    blank line always separates intent from persona and `parse_system_text` can undo this.
    """
    intent = BLANK_LINES.sub("\n", intent.strip())
    if persona:
        return f"{intent}\n\n{persona.strip()}"
    return intent


def parse_system_text(text: str) -> tuple[str, str | None]:
    """(intent, persona or None) of a system message written by `system_text`."""
    intent, _, persona = text.strip().partition("\n\n")
    return intent.strip(), persona.strip() or None


def count_user_turns(messages: list[dict]) -> int:
    """User turns in a message list (a flipped prompt, a conversation's messages or turns)."""
    return sum(1 for m in messages if m["role"] == "user")


def conversation_ends(record: dict) -> bool:
    """Whether the logged user really left after the last turn (False for cut logs)."""
    return bool(record.get("meta", {}).get("ends", True))


def flip(record: ConversationRecord, split: str | None = None) -> Iterator[FlippedSample]:
    """Turn one conversation with K user turns into K (+1 if it ends) flipped samples.

    Sample k (0-based) has the system message and the first k user/assistant pairs as
    prompt and user turn k as completion; the last sample, for a conversation that
    ends, has the whole history as prompt and END_MARKER as completion.
    """
    messages = record["messages"]
    system = {"role": "system", "content": system_text(record["intent"], record.get("persona"))}
    user_positions = [i for i, m in enumerate(messages) if m["role"] == "user"]
    for turn_index, position in enumerate(user_positions):
        yield _sample(record, split, [system, *messages[:position]], messages[position]["content"], turn_index)
    if conversation_ends(record) and messages[-1]["role"] == "assistant":
        yield _sample(record, split, [system, *messages], END_MARKER, len(user_positions))


def _sample(
    record: ConversationRecord, split: str | None, prompt: list[dict], target: str, turn_index: int
) -> FlippedSample:
    return {
        "prompt": [dict(m) for m in prompt],
        "completion": [{"role": "user", "content": target}],
        "conversation_id": record["conversation_id"],
        "turn_index": turn_index,
        "is_end": target == END_MARKER,
        "split": split,
    }

"""The record shapes of the flipped-format contract (docs/design.md#the-flipped-format), typed.

They are plain dicts on disk and in memory (one JSON object per line); these TypedDicts name
their keys and value types for the signatures that produce and consume them.
"""

from __future__ import annotations

from typing import Literal, TypedDict


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class ConversationRecord(TypedDict):
    """A conversation as prep normalises it (`conversations.jsonl`): `messages` is non-empty, strictly
    alternating and starts with `user`; `meta["ends"]` is False when the log was cut mid-way."""

    conversation_id: str
    user_id: str | None
    source: str
    language: str | None
    messages: list[Message]
    system: str | None
    intent: str
    intent_source: str
    persona: str | None
    persona_attrs: dict | None
    meta: dict


class FlippedSample(TypedDict):
    """One training sample (TRL's conversational prompt-completion shape): the system message and the
    turns before user turn `turn_index` as prompt, that turn (or the end marker) as completion."""

    prompt: list[Message]
    completion: list[Message]
    conversation_id: str
    turn_index: int
    is_end: bool
    split: str | None

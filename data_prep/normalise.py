"""Normalisation (docs/design.md#filters): role aliases, merged runs, empty and leading-assistant
messages, and the system prompt kept as metadata.

Repairs (counted in stats, the record is kept): consecutive messages of one role are
merged with a blank line, empty messages are dropped, a leading assistant message is
dropped, leading system messages become the record's `system`.

Reason codes (the record is rejected):
- `unknown_role`: a role that is none of the aliases below.
- `empty_conversation`: no message with text at all.
- `non_alternating`: the turns cannot be put into user/assistant alternation without
  inventing or losing meaning: a system message after the conversation started, or no
  user message at all.
"""

from __future__ import annotations

from collections import Counter

from .reading import Rejection

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "prompter": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


def normalise(draft: dict, repairs: Counter) -> dict | Rejection:
    """Finish a draft from `formats.to_draft` in place: `messages` become role/content dicts."""
    roles = []
    for role, text in draft["messages"]:
        canonical = ROLE_ALIASES.get(role.strip().lower())
        if canonical is None:
            return Rejection("unknown_role", f"role {role!r} is not one of {', '.join(sorted(ROLE_ALIASES))}")
        roles.append((canonical, text.strip()))
    if not any(text for _, text in roles):
        return Rejection("empty_conversation", "no message has any text")

    system_parts = []
    messages: list[dict] = []
    for role, text in roles:
        if not text:
            repairs["dropped_empty_message"] += 1
            continue
        if role == "system":
            if messages:
                return Rejection("non_alternating", "a system message appears after the conversation started")
            system_parts.append(text)
            continue
        if not messages and role == "assistant":
            repairs["dropped_leading_assistant"] += 1
            continue
        if messages and messages[-1]["role"] == role:
            repairs["merged_consecutive"] += 1
            messages[-1]["content"] += "\n\n" + text
            continue
        messages.append({"role": role, "content": text})
    if not messages:
        return Rejection("non_alternating", "there is no user message")
    draft["messages"] = messages
    draft["system"] = "\n\n".join(system_parts) or None
    return draft

"""Scope sentences: how far a user takes the conversation, stated in the intent (docs/design.md#conditioning-text).

Prep's heuristic intents end with one (data_prep/intents.py `scope_of`); evaluation takes it out where it would
give the answer away and states each length to see if it is obeyed. Rewritten only here."""

from __future__ import annotations

import re

from userlm.flipped.format import parse_system_text, system_text

# `scope_of`'s sentences, from the shortest conversation to the longest, and the user turns each
# states (fewest, most; None: no limit).
SCOPES = (
    "A single answer is all you are after.",
    "You follow up once.",
    "You follow up a few times.",
    "You keep following up for a long while.",
)
SCOPE_TURNS = ((1, 1), (2, 2), (3, 4), (5, None))


def without_scope(intent: str) -> str:
    """The intent with any scope sentence taken out."""
    for sentence in SCOPES:
        intent = intent.replace(sentence, "")
    return re.sub(" {2,}", " ", intent).strip()


def rescoped(prompt: list[dict], sentence: str | None) -> list[dict]:
    """A flipped prompt whose system message states `sentence` as its scope (None: no scope), the
    persona block untouched: the one place a sample's scope is rewritten (evaluation strips it from
    the points where it would give the answer away, and states each length to see if it is obeyed)."""
    if not prompt or prompt[0]["role"] != "system":
        return prompt
    intent, persona = parse_system_text(prompt[0]["content"])
    intent = without_scope(intent)
    if sentence:
        intent = f"{intent} {sentence}"
    return [{"role": "system", "content": system_text(intent, persona)}, *prompt[1:]]

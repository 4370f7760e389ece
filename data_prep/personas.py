"""Personas (docs/design.md#personas): text appended to the simulator's system message, and a filter
that selects a persona subset of a corpus.

Sources (`assign_personas(records, source)`):
- `style`: measured style attributes of the user's turns, bucketed into plain words and
  rendered in the second person ("You write short messages, mostly starting in lowercase, ...").
- `llm`: a short second-person profile of the user's style and background, written by an
  OpenAI-compatible chat endpoint from the user's turns only (USP-style), cached like intents.
- `column`: an existing field of the record, else of its source row (`columns`) or its `meta`.

Attributes are measured per user (all conversations of one `user_id`), or per conversation
when `user_id` is null, and are stored in `persona_attrs` whatever the source, so that
`--persona-filter` works on any corpus. The measures, over the user's turns:
- `words_per_turn`: mean whitespace-separated words per turn.
- `lowercase_start_rate`: share of turns whose first letter is lowercase.
- `punctuation_rate`: share of turns that end with sentence punctuation (. ! ? ...).
- `typo_rate`: a cheap proxy, the share of lowercase alphabetic words that look misspelt or
  dashed off: a letter three times in a row ("sooo"), no vowel at all, y counting as one ("pls", "thx";
  a few common vowel-less abbreviations such as "html" are allowed), or a lone "i".
- `question_rate`: share of turns containing "?".
- `politeness_rate`: share of turns with a politeness marker (please, thanks, sorry, ...).
- `language`: the most common `language` of the user's records, else null.

Filter expressions (`select_personas(records, "words_per_turn<=12,politeness=rare")`): parts
separated by commas, all of which must hold. A part is `NAME OP VALUE`:
- a measure (`words_per_turn`, `lowercase_start_rate`, `punctuation_rate`, `typo_rate`,
  `question_rate`, `politeness_rate`, `turns`) with `<`, `<=`, `>`, `>=`, `=` or `!=` and a number;
- a bucket (`length`, `lowercase`, `punctuation`, `typos`, `questions`, `politeness`) or
  `language` with `=` or `!=` and one word, or several joined by `|` (`length=short|very_short`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from userlm.data_prep.llm_cache import cached_chats
from userlm.endpoint import Endpoint, EndpointError
from userlm.errors import UserError
from userlm.flipped.style import matches, measure_style, parse_filter, render_style

SOURCES = ("style", "llm", "column")


def _units(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by who wrote the user turns: user_id, else the conversation itself."""
    units: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        unit = f"user:{record['user_id']}" if record.get("user_id") else f"conversation:{record['conversation_id']}"
        units[unit].append(record)
    return units


def _user_turns(records: list[dict]) -> list[str]:
    return [m["content"] for record in records for m in record["messages"] if m["role"] == "user"]


def style_by_unit(records: list[dict]) -> dict[str, dict]:
    """Measured attributes for every record, by conversation_id, aggregated per user."""
    attrs_by_conversation = {}
    for unit, members in _units(records).items():
        attrs = measure_style(_user_turns(members), [r.get("language") for r in members])
        attrs["unit"] = unit.split(":", 1)[0]
        for record in members:
            attrs_by_conversation[record["conversation_id"]] = attrs
    return attrs_by_conversation


PROFILE_INSTRUCTIONS = """Below are messages that one person wrote to an AI assistant. \
Write a short profile of this person as a user, \
in the second person ("You ..."), in two or three sentences: \
how they write (length, tone, formality, care with spelling and punctuation) \
and any background that is evident (expertise, occupation, language). \
Do not mention what they asked for or any specific task, names or numbers.
Reply with only the profile."""
PROFILE_TURNS = 8
PROFILE_TURN_CHARS = 300


def profile_messages(turns: list[str]) -> list[dict]:
    """The chat request that asks for one user's profile (their first turns, each cut short)."""
    shown = [" ".join(turn.split())[:PROFILE_TURN_CHARS] for turn in turns[:PROFILE_TURNS]]
    lines = "\n".join(f"<user>: {turn}" for turn in shown)
    return [{"role": "user", "content": f"{PROFILE_INSTRUCTIONS}\n\nMessages:\n{lines}"}]


def clean_profile(reply: str) -> str:
    """The first paragraph of the reply, without a leading label; "" if nothing is left."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", reply.strip()) if p.strip()]
    if not paragraphs:
        return ""
    return re.sub(r"^\**\s*profile\s*\**\s*:\s*", "", " ".join(paragraphs[0].split()), flags=re.IGNORECASE)


def llm_profiles(
    records: list[dict], endpoint: Endpoint, cache_path: Path, *, progress: bool = True, max_tokens: int = 96
) -> dict[str, str | EndpointError]:
    """A profile per unit (user, else conversation), by conversation_id; failures returned."""
    params = {"max_tokens": max_tokens, "temperature": 0.0}
    units = _units(records)
    requests = {unit: profile_messages(_user_turns(members)) for unit, members in units.items()}
    replies, _ = cached_chats(
        endpoint, requests, cache_path, kind="profile", params=params, desc="llm personas", progress=progress
    )
    profiles: dict[str, str | EndpointError] = {}
    for unit, members in units.items():
        reply = replies[unit]
        profile = reply if isinstance(reply, EndpointError) else clean_profile(reply)
        if profile == "":
            profile = EndpointError(
                f"The endpoint at {endpoint.host} replied with an empty persona "
                "profile; check that the model follows instructions."
            )
        for record in members:
            profiles[record["conversation_id"]] = profile
    return profiles


def source_field(record: dict, name: str):
    """A field of the record, else of its source row (`columns`), else of its `meta`."""
    for where in (record, record.get("columns") or {}, record.get("meta") or {}):
        if name in where:
            return where[name]
    return None


def assign_personas(
    records: list[dict],
    source: str,
    *,
    column: str | None = None,
    endpoint: Endpoint | None = None,
    cache_path: Path | None = None,
    progress: bool = True,
    max_tokens: int = 96,
) -> dict[str, str]:
    """Set `persona` and `persona_attrs` on every record in place, from `source`.

    Returns the failures by conversation_id with a reason code: `persona_column_missing`
    (the column is absent or empty) or `persona_failed` (the endpoint gave up or replied
    with nothing). A failed record keeps `persona` None and still gets `persona_attrs`.
    """
    if source not in SOURCES:
        raise UserError(f"Unknown persona source {source!r}; use one of {', '.join(SOURCES)}.")
    if source == "column" and not column:
        raise UserError("The persona source 'column' needs a column name; pass --persona-column.")
    if source == "llm" and (endpoint is None or cache_path is None):
        raise UserError(
            "The persona source 'llm' needs an endpoint and a cache path; pass --persona-endpoint and --persona-model."
        )
    style = style_by_unit(records)
    profiles = (
        llm_profiles(records, endpoint, cache_path, progress=progress, max_tokens=max_tokens) if source == "llm" else {}
    )
    failures: dict[str, str] = {}
    for record in records:
        cid = record["conversation_id"]
        attrs = {**style[cid], "buckets": dict(style[cid]["buckets"]), "source": source}  # one copy per record
        persona: str | None = None
        if source == "style":
            persona = render_style(attrs)
        elif source == "column":
            value = source_field(record, column)
            if isinstance(value, str) and value.strip():
                persona = value.strip()
            else:
                failures[cid] = "persona_column_missing"
            attrs["column"] = column
        else:
            profile = profiles[cid]
            if isinstance(profile, EndpointError):
                failures[cid] = "persona_failed"
            else:
                persona = profile
            attrs["model"] = endpoint.model
        record["persona"] = persona
        record["persona_attrs"] = attrs
    return failures


def select_personas(records: list[dict], expr: str) -> tuple[list[dict], list[dict]]:
    """(selected, not selected) records by a filter expression over the style attributes.

    Uses each record's `persona_attrs` when they hold the measures, else measures them
    (per user) without changing the records. A bad expression is a UserError naming the part.
    """
    conditions = parse_filter(expr)
    needs_measuring = [r for r in records if not (r.get("persona_attrs") or {}).get("buckets")]
    measured = style_by_unit(needs_measuring)
    selected, rest = [], []
    for record in records:
        attrs = measured.get(record["conversation_id"]) or record["persona_attrs"]
        (selected if matches(attrs, conditions) else rest).append(record)
    return selected, rest

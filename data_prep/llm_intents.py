"""The `llm` intent source (docs/design.md#intents): a few-shot summarisation prompt sent to any
OpenAI-compatible chat endpoint, with a persistent cache so a killed run resumes.

The prompt follows the paper's structure: instructions (a high-level intent, no specifics,
beginning with the fixed prefix), three short worked examples, the conversation as
`<user>: ...` / `<assistant>: ...` lines, then "reply with only the intent". The reply is
post-processed: first line, at most two sentences, the fixed prefix forced when the model
left it out (recorded as `meta["intent_repaired"]`), empty replies rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from userlm.data_prep.fleet import Fleet
from userlm.data_prep.llm_cache import AnswerCache, ask_missing, cached_chats, request_key
from userlm.data_prep.reading import Rejection
from userlm.endpoint import Endpoint, EndpointError
from userlm.flipped.format import INTENT_PREFIX

# Long turns are cut to their head and tail: the goal of a turn is usually stated at its
# start, and pasted code or documents in the middle say little about the intent.
MAX_TURN_CHARS = 600
MAX_MESSAGES = 8

INSTRUCTIONS = f"""You write the intent of a user who chatted with an AI assistant.
Read the conversation and describe, in one or two sentences, what the user was trying to get done.
Stay high level: name the kind of task and its topic, \
but leave out the details (no numbers, names, code, quotes or step-by-step requirements), \
so that someone given the intent could start a similar conversation in their own words.
The intent must begin with exactly: "{INTENT_PREFIX}"."""

EXAMPLES = (
    (
        [
            (
                "user",
                "my sourdough keeps coming out flat and dense, what am i doing wrong? i feed the starter once a day",
            ),
            (
                "assistant",
                "A flat loaf usually means an under-active starter or over-proofing. Try feeding it twice a day...",
            ),
            ("user", "ok and how do i know when the dough is ready to bake"),
            ("assistant", "Use the poke test: press a floured finger into the dough..."),
        ],
        f"{INTENT_PREFIX} get help troubleshooting a bread recipe that is not "
        "rising and learn how to tell when dough is ready.",
    ),
    (
        [
            (
                "user",
                "Write a Python function that reads a CSV of orders and returns the total revenue "
                "per customer, sorted.",
            ),
            ("assistant", "Here is a function using the csv module: ..."),
            ("user", "Can you make it work with pandas instead?"),
            ("assistant", "Sure, with pandas it becomes: ..."),
        ],
        f"{INTENT_PREFIX} get code that summarises sales data from a file, and then adapt it to a different library.",
    ),
    (
        [
            ("user", "I have a job interview for a nursing position on Friday. What questions should I expect?"),
            ("assistant", "Common questions include: Tell me about a time you handled a difficult patient..."),
        ],
        f"{INTENT_PREFIX} prepare for an upcoming job interview in healthcare.",
    ),
)

CLOSING = "Reply with only the intent, on one line, and nothing else."

# Openings a model writes instead of the prefix; they are replaced by it when repairing.
LOOSE_OPENINGS = re.compile(
    r"^(?:(?:the\s+)?user\s+(?:wants|wanted|is\s+trying|was\s+trying|would\s+like|needs|asks|asked)\s+to|"
    r"you\s+(?:want|wanted|are\s+trying|would\s+like|need)\s+to|to)\s+",
    re.IGNORECASE,
)
LABEL = re.compile(r"^\s*(?:\**\s*intent\s*\**\s*:|\**\s*answer\s*\**\s*:)\s*", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= MAX_TURN_CHARS:
        return text
    half = MAX_TURN_CHARS // 2
    return f"{text[:half]} [...] {text[-half:]}"


def serialise(messages: list[tuple[str, str]] | list[dict]) -> str:
    """A conversation as `<user>: ...` / `<assistant>: ...` lines, long turns and long chats cut."""
    pairs = [(m["role"], m["content"]) if isinstance(m, dict) else m for m in messages]
    lines = [f"<{role}>: {_shorten(content)}" for role, content in pairs[:MAX_MESSAGES]]
    if len(pairs) > MAX_MESSAGES:
        lines.append(f"[... {len(pairs) - MAX_MESSAGES} more messages]")
    return "\n".join(lines)


def intent_messages(record: dict) -> list[dict]:
    """The chat request that asks for one conversation's intent."""
    examples = "\n\n".join(
        f"Example {i}:\nConversation:\n{serialise(conversation)}\nIntent: {intent}"
        for i, (conversation, intent) in enumerate(EXAMPLES, start=1)
    )
    prompt = (
        f"{INSTRUCTIONS}\n\n{examples}\n\n"
        f"Now the conversation to describe:\nConversation:\n{serialise(record['messages'])}\n\n{CLOSING}"
    )
    return [{"role": "user", "content": prompt}]


def clean_intent(reply: str) -> tuple[str, bool]:
    """(intent, repaired) from a raw reply; intent is "" when nothing usable is left.

    Keeps the first non-empty line and at most two sentences of it; when the fixed prefix
    appears later in that line (a chatty "Sure! You are a user ...") the text from the
    prefix on is kept; otherwise the prefix is forced in front (`repaired` is True).
    """
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return "", False
    text = LABEL.sub("", lines[0]).strip().strip("\"'`*").strip()
    position = text.lower().find(INTENT_PREFIX.lower())
    repaired = position < 0
    if repaired:
        body = LOOSE_OPENINGS.sub("", text).strip()
        if not any(character.isalpha() for character in body):
            return "", False
        if not (len(body) > 1 and body[1].isupper()):  # keep acronyms such as "SQL" intact
            body = body[0].lower() + body[1:]
        text = f"{INTENT_PREFIX} {body}"
    else:
        text = INTENT_PREFIX + text[position + len(INTENT_PREFIX) :]
    if text.strip() == INTENT_PREFIX:
        return "", False
    text = " ".join(SENTENCE_END.split(text)[:2]).strip()
    if text[-1] not in ".!?":
        text += "."
    return text, repaired


def intent_params(max_tokens: int = 96) -> dict:
    return {"max_tokens": max_tokens, "temperature": 0.0}


def intent_of_reply(record: dict, reply: str | EndpointError, host: str) -> str | EndpointError:
    """The cleaned intent of a reply, or why there is none; marks `meta["intent_repaired"]`."""
    if isinstance(reply, EndpointError):
        return reply
    intent, repaired = clean_intent(reply)
    if not intent:
        return EndpointError(
            f"The endpoint at {host} replied with no usable intent for conversation {record['conversation_id']}; "
            "check that the model follows instructions."
        )
    if repaired:
        record.setdefault("meta", {})["intent_repaired"] = True
    return intent


def llm_intents(
    records: list[dict],
    endpoint: Endpoint | Fleet,
    cache_path: Path,
    *,
    progress: bool = True,
    max_tokens: int = 96,
) -> dict[str, str | EndpointError]:
    """Intents for `records` by conversation_id, asking the endpoint only for uncached ones.

    Each answer is committed to the cache at `cache_path` as soon as it arrives, so a run
    killed at any moment resumes where it stopped. Failures (the endpoint gave up, or the
    reply held no usable intent) are returned as EndpointError, never raised. Sets
    `meta["intent_repaired"] = True` on records whose reply lacked the fixed prefix.
    """
    requests = {record["conversation_id"]: intent_messages(record) for record in records}
    replies, asked = cached_chats(
        endpoint,
        requests,
        cache_path,
        kind="intent",
        params=intent_params(max_tokens),
        desc="llm intents",
        progress=progress,
    )
    results = {
        record["conversation_id"]: intent_of_reply(record, replies[record["conversation_id"]], endpoint.host)
        for record in records
    }
    if progress:
        failed = sum(isinstance(result, EndpointError) for result in results.values())
        repaired = sum(bool(record.get("meta", {}).get("intent_repaired")) for record in records)
        tqdm.write(
            f"llm intents: {len(records) - asked} from cache, {asked} asked, "
            f"{repaired} prefix repaired, {failed} failed (cache: {cache_path})"
        )
    return results


def ask_intents(
    records: Iterable[dict], endpoint: Endpoint | Fleet, cache_path: Path, *, progress: bool = True
) -> dict:
    """Fill the cache with an answer (or a failure) for every record, streaming: records are
    read as requests go out, so a corpus of any size is asked in flat memory."""
    params = intent_params()
    requests = ((request_key(endpoint.model, messages, params), messages) for messages in map(intent_messages, records))
    with AnswerCache(cache_path) as cache:
        return ask_missing(
            endpoint, requests, cache, kind="intent", params=params, desc="llm intents", progress=progress
        )


def intents_from_cache(records: list[dict], cache_path: Path, model: str, host: str) -> list[tuple[dict, Rejection]]:
    """Set the cached LLM intent on every record (after `ask_intents`); the ones without one."""
    params = intent_params()
    failures = []
    with AnswerCache(cache_path, read_only=True) as cache:
        for record in records:
            key = request_key(model, intent_messages(record), params)
            answer = cache.get(key)
            reply = answer if answer is not None else EndpointError(cache.failure(key) or "no answer was recorded")
            intent = intent_of_reply(record, reply, host)
            if isinstance(intent, EndpointError):
                failures.append((record, Rejection("intent_failed", str(intent))))
            else:
                record["intent"], record["intent_source"] = intent, f"llm:{model}"
    return failures

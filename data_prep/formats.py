"""The log schemas we read (docs/design.md#inputs): detecting them and mapping a raw record to a draft.

A draft is a conversation record (format.CONVERSATION_KEYS) whose `messages` are still the
raw `(role, content)` pairs of the source; `normalise.normalise` finishes it. Every other
field of the source row is kept in `columns` so `--intent-column` / `--persona-column` can
name it.

Schema reason codes:
- `missing_keys`: the record lacks its conversation list, or a message lacks its role or text.
- `wrong_types`: the record is not an object, the conversation is not a list, a message is
  not an object, or a role or text is not a string.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from userlm.errors import UserError

from .reading import Rejection, read_file

FORMATS = ("sharegpt", "wildchat", "lmsys", "openai")
# How many readable records may pass without one whose keys name a format.
DETECT_WINDOW = 100
SHAREGPT_PART = re.compile(r"^(.*)_(\d+)$")

# The language names WildChat and LMSYS-Chat-1M use, mapped to the ISO codes the detector gives.
LANGUAGE_CODES = {
    "english": "en",
    "chinese": "zh",
    "russian": "ru",
    "french": "fr",
    "spanish": "es",
    "portuguese": "pt",
    "german": "de",
    "arabic": "ar",
    "italian": "it",
    "turkish": "tr",
    "japanese": "ja",
    "korean": "ko",
    "polish": "pl",
    "vietnamese": "vi",
    "indonesian": "id",
    "dutch": "nl",
    "persian": "fa",
    "ukrainian": "uk",
    "hindi": "hi",
    "swedish": "sv",
    "greek": "el",
    "czech": "cs",
    "hebrew": "he",
    "thai": "th",
    "romanian": "ro",
}


def detect_format(record: dict) -> str | None:
    """The schema a record's keys say it has, or None if they say nothing."""
    if not isinstance(record, dict):
        return None
    if "conversations" in record:
        return "sharegpt"
    if "conversation_hash" in record or ("conversation" in record and "hashed_ip" in record):
        return "wildchat"
    if "conversation" in record:
        return "lmsys"
    if "messages" in record:
        return "openai"
    return None


def file_format(path: Path, fmt: str | None) -> str | None:
    """The format of one input: `fmt` when given, else detected from the keys of its first
    records; None when no record of the file can be read at all (every one is rejected)."""
    if fmt is not None:
        return fmt
    readable = 0
    for _, record in read_file(path):
        if isinstance(record, Rejection):
            continue
        detected = detect_format(record)
        if detected is not None:
            return detected
        readable += 1
        if readable >= DETECT_WINDOW:
            break
    if readable:
        raise UserError(
            f"Cannot tell the format of {path} from its records' keys; pass --format with one of {', '.join(FORMATS)}."
        )
    return None


def raw_id(record) -> str | None:
    """The source's own id of a raw record, for rejected.jsonl."""
    if isinstance(record, dict):
        for key in ("id", "conversation_id", "conversation_hash"):
            if isinstance(record.get(key), (str, int)):
                return str(record[key])
    return None


def language_code(name) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip().lower()
    return LANGUAGE_CODES.get(name, name)


def content_hash(messages) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def to_draft(record, fmt: str) -> dict | Rejection:
    if not isinstance(record, dict):
        return Rejection("wrong_types", f"the record is a JSON {type(record).__name__}, not an object")
    return PARSERS[fmt](record)


def _messages(record: dict, key: str, role_key: str, text_key: str) -> list[tuple[str, str]] | Rejection:
    if key not in record or record[key] is None:
        return Rejection("missing_keys", f"no {key!r} list")
    turns = record[key]
    if not isinstance(turns, list):
        return Rejection("wrong_types", f"{key!r} is a {type(turns).__name__}, not a list")
    pairs = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return Rejection("wrong_types", f"message {i} is a {type(turn).__name__}, not an object")
        if role_key not in turn or text_key not in turn:
            missing = role_key if role_key not in turn else text_key
            return Rejection("missing_keys", f"message {i} has no {missing!r}")
        role, text = turn[role_key], turn[text_key]
        if text is None:
            text = ""
        if not isinstance(role, str) or not isinstance(text, str):
            return Rejection("wrong_types", f"message {i} has a non-string {role_key!r} or {text_key!r}")
        pairs.append((role, text))
    return pairs


def _identifier(value) -> str | None:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
        return str(value)
    return None


def _draft(conversation_id, user_id, source, language, messages, meta, columns) -> dict:
    return {
        "conversation_id": conversation_id or content_hash(messages),
        "user_id": user_id,
        "source": source,
        "language": language,
        "messages": messages,
        "system": None,
        "intent": None,
        "intent_source": None,
        "persona": None,
        "persona_attrs": None,
        "meta": meta,
        "columns": columns,
    }


def _columns(record: dict, used: tuple[str, ...]) -> dict:
    return {k: v for k, v in record.items() if k not in used}


def parse_sharegpt(record: dict) -> dict | Rejection:
    messages = _messages(record, "conversations", "from", "value")
    if isinstance(messages, Rejection):
        return messages
    conversation_id = _identifier(record.get("id"))
    if "id" in record and record["id"] is not None and conversation_id is None:
        return Rejection("wrong_types", "'id' is not a string")
    meta: dict = {}
    user_id = None
    if conversation_id is not None:
        part = SHAREGPT_PART.match(conversation_id)
        user_id = part.group(1) if part else conversation_id
        meta["part"] = int(part.group(2)) if part else 0
    return _draft(conversation_id, user_id, "sharegpt", None, messages, meta, _columns(record, ("id", "conversations")))


def parse_wildchat(record: dict) -> dict | Rejection:
    messages = _messages(record, "conversation", "role", "content")
    if isinstance(messages, Rejection):
        return messages
    hashed_ip, country = record.get("hashed_ip"), record.get("country")
    user_id = f"{hashed_ip}|{country}" if hashed_ip else None
    meta = {
        key: record[key]
        for key in ("country", "state", "model", "timestamp", "toxic", "redacted", "turn")
        if record.get(key) is not None
    }
    return _draft(
        _identifier(record.get("conversation_hash")),
        user_id,
        "wildchat",
        language_code(record.get("language")),
        messages,
        meta,
        _columns(record, ("conversation_hash", "conversation", "hashed_ip")),
    )


def parse_lmsys(record: dict) -> dict | Rejection:
    messages = _messages(record, "conversation", "role", "content")
    if isinstance(messages, Rejection):
        return messages
    meta = {key: record[key] for key in ("model", "redacted", "turn") if record.get(key) is not None}
    moderation = record.get("openai_moderation")
    if isinstance(moderation, list):
        meta["toxic"] = any(isinstance(m, dict) and m.get("flagged") for m in moderation)
    return _draft(
        _identifier(record.get("conversation_id")),
        None,
        "lmsys",
        language_code(record.get("language")),
        messages,
        meta,
        _columns(record, ("conversation_id", "conversation", "openai_moderation")),
    )


def parse_openai(record: dict) -> dict | Rejection:
    messages = _messages(record, "messages", "role", "content")
    if isinstance(messages, Rejection):
        return messages
    conversation_id = _identifier(record.get("conversation_id")) or _identifier(record.get("id"))
    user_id = _identifier(record.get("user_id")) or _identifier(record.get("user"))
    return _draft(
        conversation_id,
        user_id,
        "openai",
        language_code(record.get("language")),
        messages,
        {},
        _columns(record, ("messages", "conversation_id", "id")),
    )


PARSERS = {"sharegpt": parse_sharegpt, "wildchat": parse_wildchat, "lmsys": parse_lmsys, "openai": parse_openai}

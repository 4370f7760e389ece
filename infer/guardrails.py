"""The paper's four guardrails (docs/design.md#guardrails) as one configuration plus the draft checks.

Two of them act while a turn is sampled (`infer/sampling.py`): a banned first word and a
too-early end marker are removed from the distribution at the token where they would
have been drawn, which is cheaper than sampling a whole turn and throwing it away. The
other two need the finished draft: a turn of the wrong length, or a verbatim repeat, is
rejected here and resampled. The end marker or a banned word that the tokenizer spells
with several tokens is also caught here, on the draft.

Every rejection becomes an event (a plain dict, recorded in the transcript):
    {"guardrail": "first_word" | "end_too_early" | "length" | "repetition" | "fallback",
     "action": "redrawn" | "rejected" | "end" | "keep", "attempt": int, ...details}

Fallback when `max_attempts` drafts in a row were rejected:
    "end"  (default): the turn is not used; a simulation ends the conversation with
           termination_reason "guardrails_exhausted".
    "keep": the last draft is used as the turn anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from userlm.config import Config
from userlm.errors import UserError
from userlm.flipped.drafts import ParsedDraft
from userlm.flipped.format import count_user_turns, parse_system_text

DEFAULT_BANNED_FIRST_WORDS = ("I", "You", "Here", "i", "you", "here")
_FIRST_WORD = re.compile(r"[^\W\d_]+")


@dataclass(kw_only=True)
class Guardrails(Config):
    """The guardrails' settings: a `guardrails:` mapping in a simulate/chat config, `--guardrails.KEY` flags."""

    banned_first_words: tuple[str, ...] = field(
        default=DEFAULT_BANNED_FIRST_WORDS,
        metadata={"help": "words a turn may not begin with (first-word filter); an empty list turns it off"},
    )
    min_turns_before_end: int | Literal["never"] = field(
        default=2,
        metadata={
            "help": "user turns written before the end marker is allowed; 0 allows it at once, 'never' bans it",
            "min": 0,
        },
    )
    min_words: int | None = field(
        default=3, metadata={"help": "fewest words in a turn; null turns the bound off", "min": 0}
    )
    max_words: int | None = field(
        default=25, metadata={"help": "most words in a turn; null turns the bound off", "min": 1}
    )
    filter_repetition: bool = field(
        default=True,
        metadata={"help": "resample a turn equal to an earlier user turn, the intent or an assistant turn"},
    )
    max_attempts: int = field(default=4, metadata={"help": "drafts per turn before the fallback applies", "min": 1})
    fallback: Literal["end", "keep"] = field(
        default="end",
        metadata={
            "help": "after max_attempts rejected drafts: 'end' stops the conversation "
            "(guardrails_exhausted), 'keep' uses the last draft"
        },
    )

    def validate(self) -> None:
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise UserError(
                f"Set guardrails.min_words ({self.min_words}) no larger than guardrails.max_words ({self.max_words})."
            )

    def end_allowed(self, user_turns_so_far: int) -> bool:
        """Whether the user may leave now, having written `user_turns_so_far` turns."""
        if self.min_turns_before_end == "never":
            return False
        return user_turns_so_far >= self.min_turns_before_end


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def first_word(text: str) -> str:
    """The first run of letters ("I'm sure" -> "I"), which is what the ban list names."""
    match = _FIRST_WORD.search(text)
    return match.group(0) if match else ""


def word_count(text: str) -> int:
    return len(text.split())


def check_draft(draft: ParsedDraft, prompt: list[dict], guardrails: Guardrails) -> dict | None:
    """The reason a parsed draft is rejected (an event without `attempt`), or None if it passes.

    A draft that leaves is judged by the termination rule alone: its last words, if any,
    are a farewell, exempt from the length and repetition checks like the end marker.
    """
    if draft.ended:
        if not guardrails.end_allowed(count_user_turns(prompt)):
            return {"guardrail": "end_too_early", "action": "rejected"}
        return None
    text = draft.words
    if guardrails.banned_first_words and first_word(text) in guardrails.banned_first_words:
        return {"guardrail": "first_word", "action": "rejected", "draft": text, "word": first_word(text)}
    words = word_count(text)
    too_short = guardrails.min_words is not None and words < guardrails.min_words
    too_long = guardrails.max_words is not None and words > guardrails.max_words
    if too_short or too_long:
        return {"guardrail": "length", "action": "rejected", "draft": text, "words": words}
    if guardrails.filter_repetition:
        repeated = repeated_source(text, prompt)
        if repeated:
            return {"guardrail": "repetition", "action": "rejected", "draft": text, "repeats": repeated}
    return None


def repeated_source(text: str, prompt: list[dict]) -> str | None:
    """What `text` repeats verbatim (after case and whitespace normalisation), if anything."""
    draft = normalise(text)
    for message in prompt:
        if message["role"] == "system":
            intent, _ = parse_system_text(message["content"])
            if draft in (normalise(intent), normalise(message["content"])):
                return "intent"
        elif draft == normalise(message["content"]):
            return f"{message['role']}_turn"
    return None

"""The paper's four guardrails (DESIGN.md 6.1) as one configuration plus the draft checks.

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
from dataclasses import dataclass

from userlm.data_prep.format import END_MARKER
from userlm.errors import UserError

DEFAULT_BANNED_FIRST_WORDS = ("I", "You", "Here", "i", "you", "here")
FALLBACKS = ("end", "keep")
_FIRST_WORD = re.compile(r"[^\W\d_]+")


@dataclass
class Guardrails:
    # 1. First-word filter; an empty tuple turns it off.
    banned_first_words: tuple[str, ...] = DEFAULT_BANNED_FIRST_WORDS
    # 2. Termination control: the end marker is banned until the user has written this many
    #    turns; "never" bans it always, 0 allows it from the first turn.
    min_turns_before_end: int | str = 2
    # 3. Length bounds in words (the paper used 3 and 25); None turns a bound off.
    min_words: int | None = 3
    max_words: int | None = 25
    # 4. Verbatim repetition of an earlier user turn, the intent, or an assistant turn.
    filter_repetition: bool = True
    # Drafts per turn before the fallback applies.
    max_attempts: int = 4
    fallback: str = "end"

    def __post_init__(self) -> None:
        self.banned_first_words = tuple(self.banned_first_words)
        if self.min_turns_before_end != "never" and not (
            isinstance(self.min_turns_before_end, int) and self.min_turns_before_end >= 0
        ):
            raise UserError('Set min_turns_before_end to a whole number of turns (0 or more) or to "never".')
        if self.fallback not in FALLBACKS:
            raise UserError(f"Set the guardrail fallback to one of: {', '.join(FALLBACKS)}.")
        if self.max_attempts < 1:
            raise UserError("Set max_attempts to at least 1.")
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise UserError("Set min_words no larger than max_words.")

    def end_allowed(self, user_turns_so_far: int) -> bool:
        """Whether the user may leave now, having written `user_turns_so_far` turns."""
        if self.min_turns_before_end == "never":
            return False
        return user_turns_so_far >= self.min_turns_before_end

    def as_dict(self) -> dict:
        return {
            "banned_first_words": list(self.banned_first_words),
            "min_turns_before_end": self.min_turns_before_end,
            "min_words": self.min_words,
            "max_words": self.max_words,
            "filter_repetition": self.filter_repetition,
            "max_attempts": self.max_attempts,
            "fallback": self.fallback,
        }


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def first_word(text: str) -> str:
    """The first run of letters ("I'm sure" -> "I"), which is what the ban list names."""
    match = _FIRST_WORD.search(text)
    return match.group(0) if match else ""


def word_count(text: str) -> int:
    return len(text.split())


def user_turn_count(prompt: list[dict]) -> int:
    return sum(1 for m in prompt if m["role"] == "user")


def check_draft(text: str, prompt: list[dict], guardrails: Guardrails) -> dict | None:
    """The reason a finished draft is rejected (an event without `attempt`), or None if it passes.

    `text` is stripped; the end marker is exempt from the length and repetition checks.
    """
    if text == END_MARKER:
        if not guardrails.end_allowed(user_turn_count(prompt)):
            return {"guardrail": "end_too_early", "action": "rejected"}
        return None
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
            # The system message is the intent, then a blank line and the persona (DESIGN.md 3.2).
            intent = message["content"].split("\n\n")[0]
            if draft in (normalise(intent), normalise(message["content"])):
                return "intent"
        elif draft == normalise(message["content"]):
            return f"{message['role']}_turn"
    return None

"""Fitting a long flipped sample into `max_length` without losing its conditioning (docs/design.md#truncation).

A sample is the system message (intent, then persona), the history, and the target user
turn. When it is too long, its oldest whole exchanges (a user turn and the assistant's
reply) go first, so the model still sees who it plays and what it wants, and the turns
nearest the target. If the newest message alone is still too long, the start of its text
goes (what the user replies to is its end). The system message and the target are never
cut: a sample that does not fit with its system message, its target and at least the end
of the message it answers cannot be trained on (left with the system message alone, it
would teach the target as a first turn), and `fit_sample` returns None for it.

Every candidate is tokenised by `flipped.templates.tokenize_sample`, the one place samples
become ids, so the labels of a cut sample are exactly those of an uncut one.
"""

from __future__ import annotations

from dataclasses import dataclass

from userlm.flipped.templates import FlippedTemplate, tokenize_sample


@dataclass
class Fitted:
    input_ids: list[int]
    completion_mask: list[int]
    # Messages of the history dropped whole, and characters cut from the start of the newest one.
    dropped_messages: int = 0
    cut_characters: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.dropped_messages or self.cut_characters)


def fit_sample(tokenizer, template: FlippedTemplate, sample: dict, max_length: int | None) -> Fitted | None:
    """`sample` tokenised, cut to at most `max_length` tokens as the module says; None if it cannot fit."""

    def encode(prompt: list[dict]) -> dict:
        return tokenize_sample(tokenizer, template, {**sample, "prompt": prompt})

    whole = encode(sample["prompt"])
    if max_length is None or len(whole["input_ids"]) <= max_length:
        return Fitted(whole["input_ids"], whole["completion_mask"])
    prompt = sample["prompt"]
    conditioning = 0
    while conditioning < len(prompt) and prompt[conditioning]["role"] == "system":
        conditioning += 1
    system, history = prompt[:conditioning], prompt[conditioning:]

    def fits(dropped: int) -> dict | None:
        ids = encode(system + history[dropped:])
        return ids if len(ids["input_ids"]) <= max_length else None

    # Whole exchanges from the oldest, while a message is left: the fewest drops that fit.
    drops = list(range(2, len(history), 2))
    low, high = 0, len(drops)
    while low < high:
        middle = (low + high) // 2
        if fits(drops[middle]):
            high = middle
        else:
            low = middle + 1
    if low < len(drops):
        ids = fits(drops[low])
        return Fitted(ids["input_ids"], ids["completion_mask"], dropped_messages=drops[low])
    if not history:
        return None
    return _cut_newest_message(encode, system, history, max_length)


def _cut_newest_message(encode, system: list[dict], history: list[dict], max_length: int) -> Fitted | None:
    """Only the newest message kept, its text cut from the start: the most characters that fit."""
    newest = history[-1]
    text = newest["content"]

    def with_tail(kept: int) -> dict:
        return encode(system + [{**newest, "content": text[len(text) - kept :]}])

    low, high = 0, len(text)
    while low < high:  # the largest `kept` that fits
        middle = (low + high + 1) // 2
        if len(with_tail(middle)["input_ids"]) <= max_length:
            low = middle
        else:
            high = middle - 1
    ids = with_tail(low)
    if low == 0 or len(ids["input_ids"]) > max_length:
        return None
    return Fitted(
        ids["input_ids"], ids["completion_mask"], dropped_messages=len(history) - 1, cut_characters=len(text) - low
    )

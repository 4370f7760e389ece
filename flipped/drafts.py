"""Reading a drafted user turn (docs/design.md#reading-a-drafted-turn): the one parser every backend calls.

A draft is the text a model wrote after the open user header of a flipped prompt. It may
    - end with the end marker after some words ("ok thanks, bye<|endconversation|>"): the
      user leaves, and the words before the marker are kept as the last turn;
    - be empty, from a server that strips special tokens from a lone end marker: the user
      left (only when the caller says the server strips them and the model has the marker);
    - run past its turn into the next header, from a server that does not stop at the
      end-of-turn token: it is cut at the boundary. With special tokens kept, the boundary
      is the end-of-turn token or the next header token; with them stripped, it is what the
      template's turn boundary looks like without them (for userlm-llama3 the role name glued
      to the last word, "...thanksassistant\\nSure"; for chatml a line holding only the role).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .format import END_MARKER
from .templates import FlippedTemplate

# How a template's special tokens look in text: <|eot_id|>, <|im_start|>, <|start_header_id|>.
SPECIAL_TOKEN = re.compile(r"<\|[^<>|\s]+\|>")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ParsedDraft:
    # The user's words, stripped; "" when the user left without any.
    words: str
    # The user leaves the conversation after `words`.
    ended: bool
    # The draft ran past its turn and was cut at the boundary.
    cut: bool = False

    @property
    def text(self) -> str:
        """The turn as the simulators report it: the words, or the end marker alone for a silent leave."""
        return self.words if self.words or not self.ended else END_MARKER


def parse_draft(
    text: str, template: FlippedTemplate, *, special_tokens_stripped: bool = False, has_end_marker: bool = True
) -> ParsedDraft:
    """The user turn in a raw draft.

    `special_tokens_stripped`: the draft comes from a server that drops special tokens from
    its text (`transformers serve`), so an empty draft is a lone end marker (when the model
    `has_end_marker`) and a turn boundary shows without its special tokens.
    """
    boundary = _boundaries(template, special_tokens_stripped).search(text)
    cut = boundary is not None
    if cut:
        text = text[: boundary.start()]
    words, marker, _ = text.partition(END_MARKER)
    words = words.strip()
    ended = bool(marker) or (special_tokens_stripped and has_end_marker and not words)
    return ParsedDraft(words, ended, cut)


@functools.cache
def _boundaries(template: FlippedTemplate, special_tokens_stripped: bool) -> re.Pattern:
    """Where a draft's turn ends: what the template writes between one message's content and the next role's."""
    rendered = _render(template, [{"role": "user", "content": "\x00"}, {"role": "assistant", "content": "\x01"}])
    between = rendered[rendered.index("\x00") + 1 : rendered.index("\x01")]
    if not special_tokens_stripped:
        # The end-of-turn token, or any header token (a turn that skipped its end-of-turn token).
        tokens = {template.eot_token, *SPECIAL_TOKEN.findall(between)}
        return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    # Without special tokens, the boundary before the assistant turn reads e.g. "assistant\n" or "\nassistant\n".
    visible = SPECIAL_TOKEN.sub("", between)
    before_role, _, after_role = visible.partition("assistant")
    # With nothing visible before it, the role name is glued to the last word ("thanksassistant\n").
    before = re.escape(before_role) if before_role else r"(?<=\S)"
    # A draft may also open with the boundary: an empty turn (a stripped end marker) that ran on.
    return re.compile(f"(?:^\\s*|{before})(?:{'|'.join(ROLES)}){re.escape(after_role)}")


def _render(template: FlippedTemplate, messages: list[dict]) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # The same environment settings transformers renders chat templates with.
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(template.jinja).render(messages=messages)

"""Judges for the adherence probes: an OpenAI-compatible endpoint, or an offline heuristic.

Both return, per probe, True (the simulated user adhered), False (it did not) or None
(the endpoint's answer could not be read or the request failed; counted and reported,
left out of the rate). The heuristic judge needs no model; it is a keyword baseline and
every report labels it as such.
"""

from __future__ import annotations

import re

from userlm.flipped.format import END_MARKER
from userlm.flipped.words import LIST_LINE, content_words

from .metrics import intent_without_prefix
from .probes import Probe

HEURISTIC_LABEL = "offline heuristic judge (keyword rules, not a model)"

# Openings and phrases that mark a reply written from the assistant's side of the chat.
ASSISTANT_OPENINGS = (
    "sure! here",
    "sure, here",
    "certainly",
    "of course!",
    "absolutely!",
    "great question",
    "i'd be happy to",
    "i would be happy to",
    "here is",
    "here's",
    "here are",
    "as an ai",
)
ASSISTANT_PHRASES = (
    "as an ai",
    "language model",
    "how can i help",
    "how can i assist",
    "i hope this helps",
    "let me know if you have any other questions",
    "feel free to ask",
    "happy to help",
)
ACCEPTANCE_OPENINGS = (
    "sure",
    "yes",
    "yeah",
    "ok",
    "okay",
    "sounds good",
    "why not",
    "let's do",
    "that sounds",
    "that's a good",
    "good idea",
    "great idea",
    "i'd love",
    "i would love",
    "of course",
    "absolutely",
    "definitely",
)
DECLINE_MARKERS = ("no", "not", "rather", "back to", "stay", "stick", "focus", "first", "instead of")


def _opening(text: str) -> str:
    return text.strip().lower()


class HeuristicJudge:
    label = HEURISTIC_LABEL

    def judge(self, probes: list[Probe], replies: list[str]) -> list[bool | None]:
        return [self.role(r) if p.kind == "role" else self.intent(p, r) for p, r in zip(probes, replies)]

    @staticmethod
    def role(reply: str) -> bool:
        """A user who ends the chat, or writes anything not shaped like an assistant answer, stays a user."""
        text = _opening(reply)
        if text == END_MARKER.lower():
            return True
        if text.startswith(ASSISTANT_OPENINGS) or any(p in text for p in ASSISTANT_PHRASES):
            return False
        # A long, list-formatted answer is the assistant's shape, not a chat user's.
        return not (len(LIST_LINE.findall(reply)) >= 2 and len(text.split()) > 60)

    @staticmethod
    def intent(probe: Probe, reply: str) -> bool:
        """The user went along with the diversion if it opens by accepting it, or talks about the
        diversion's topic without touching its own intent; anything else stays on intent."""
        text = _opening(reply)
        if text == END_MARKER.lower():
            return True
        # "why not" accepts; its "not" must not count as declining.
        unhedged = text.replace("why not", "")
        words = set(re.findall(r"[a-z']+", unhedged))
        own = content_words(intent_without_prefix(probe.intent)) | content_words(probe.first_turn)
        topic = content_words(probe.diversion or "")
        declines = any((" " in m and m in unhedged) or m in words for m in DECLINE_MARKERS)
        accepts = text.startswith(ACCEPTANCE_OPENINGS) and not declines
        talks_topic = bool(content_words(reply) & topic) and not (content_words(reply) & own)
        return not (accepts or talks_topic)


ROLE_QUESTION = (
    "Below is a chat between a user and an AI assistant. The last message was written by a model "
    "that must play the USER. Does that last message stay in the role of a human user (it does not "
    "answer as the assistant, offer help, or speak as an AI)? Answer with one word: YES or NO."
)
INTENT_QUESTION = (
    "Below is a chat between a user and an AI assistant. The user's goal is: {intent}\n"
    "The assistant proposed changing the subject to {topic}. Does the user's last message stay on "
    "the user's own goal instead of going along with the new subject? Answer with one word: YES or NO."
)


def parse_verdict(answer: str) -> bool | None:
    match = re.search(r"\b(yes|no)\b", answer.lower())
    return None if match is None else match.group(1) == "yes"


def judge_messages(probe: Probe, reply: str) -> list[dict]:
    question = (
        ROLE_QUESTION if probe.kind == "role" else INTENT_QUESTION.format(intent=probe.intent, topic=probe.diversion)
    )
    transcript = f"USER: {probe.first_turn}\nASSISTANT: {probe.assistant}\nUSER: {reply}"
    return [{"role": "user", "content": f"{question}\n\n{transcript}"}]


class EndpointJudge:
    """Asks an OpenAI-compatible chat endpoint (`userlm.endpoint`) for a YES/NO verdict per probe."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.label = f"endpoint judge: model {endpoint.model!r} at {endpoint.host}"
        # Requests that failed after all retries; their probes are counted as unjudged.
        self.failures: list[str] = []

    def judge(self, probes: list[Probe], replies: list[str]) -> list[bool | None]:
        from userlm.endpoint import EndpointError, run_with_endpoint

        async def ask(client, item):
            probe, reply = item
            return parse_verdict(await client.chat(judge_messages(probe, reply), temperature=0.0, max_tokens=4))

        answers = run_with_endpoint(self.endpoint, ask, list(zip(probes, replies)), desc="judge")
        self.failures += [str(a) for a in answers if isinstance(a, EndpointError)]
        return [None if isinstance(a, EndpointError) else a for a in answers]


def adherence(judge, probes: list[Probe], replies: list[str]) -> dict:
    """The share of judged probes where the simulated user adhered, in percent, with a few examples."""
    verdicts = judge.judge(probes, replies)
    judged = [v for v in verdicts if v is not None]
    return {
        "value": 100 * sum(judged) / len(judged) if judged else None,
        "n": len(judged),
        "unjudged": len(verdicts) - len(judged),
        "examples": [
            {"assistant": p.assistant, "reply": r, "adhered": v} for p, r, v in list(zip(probes, replies, verdicts))[:3]
        ],
    }

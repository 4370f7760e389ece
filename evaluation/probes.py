"""Role- and intent-adherence probes with a scripted assistant (docs/design.md#metrics).

Each probe starts from a real held-out conversation opening: the intent and the real
first user turn. The assistant's reply is scripted from a template, so no assistant
model is needed:
- role probe: the assistant feigns uncertainty and asks the user back. An adherent
  simulator stays a user (it does not start answering as the assistant).
- intent probe: the assistant proposes a diversion to an unrelated topic. An adherent
  simulator stays on its own intent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from userlm.flipped.format import parse_system_text

ROLE_TEMPLATES = (
    "Hmm, I'm honestly not sure about this one. What do you think the answer is?",
    "I don't really know how to approach that. How would you do it yourself?",
    "That's a tough one and I'm not certain. What would you suggest?",
    "I'm unsure here. Could you explain how you would solve it?",
)

INTENT_TEMPLATES = (
    "Before we go on, would you rather talk about {topic} instead?",
    "Let's change the subject: what do you know about {topic}?",
    "I think it would be more fun to discuss {topic}. Shall we switch to that?",
    "Actually, how about we talk about {topic} for a while?",
)

# Topics chosen to be unrelated to typical chat-log intents, so taking them up is a clear switch.
DIVERSION_TOPICS = (
    "the history of the Roman Empire",
    "planning a holiday in Japan",
    "a recipe for banana bread",
    "the rules of cricket",
    "growing tomatoes on a balcony",
    "the life cycle of butterflies",
)


@dataclass(frozen=True)
class Probe:
    kind: str  # "role" or "intent"
    system: str  # the system message: the intent (and persona, if any)
    first_turn: str  # the real first user turn
    assistant: str  # the scripted assistant reply
    diversion: str | None  # the proposed topic, for intent probes

    @property
    def intent(self) -> str:
        return parse_system_text(self.system)[0]

    @property
    def prompt(self) -> list[dict]:
        """The flipped prompt whose continuation is the probed user turn."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.first_turn},
            {"role": "assistant", "content": self.assistant},
        ]


def build_probes(first_turn_samples: list[dict], kind: str, count: int, seed: int) -> list[Probe]:
    """`count` probes of one kind from real first-turn samples, templates and topics drawn with `seed`."""
    if kind not in ("role", "intent"):
        raise ValueError(f"Unknown probe kind {kind!r}; use 'role' or 'intent'.")
    rng = random.Random(f"{seed}-{kind}")
    probes = []
    for sample in first_turn_samples[:count]:
        system = sample["prompt"][0]["content"]
        first_turn = sample["completion"][0]["content"]
        if kind == "role":
            probes.append(Probe("role", system, first_turn, rng.choice(ROLE_TEMPLATES), None))
        else:
            topic = rng.choice(DIVERSION_TOPICS)
            probes.append(Probe("intent", system, first_turn, rng.choice(INTENT_TEMPLATES).format(topic=topic), topic))
    return probes

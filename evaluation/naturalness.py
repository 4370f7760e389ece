"""Naturalness: the share of generated user turns a detector calls human-written (DESIGN.md 7).

The detector is pluggable: any importable callable `detect(texts: list[str]) -> list[float]`
returning, per text, the probability that a human wrote it (e.g. a wrapper around an
AI-text classifier), named as `module:function`. When none is given, the offline
stylometric baseline below is used and every report labels it as such: a nearest-centroid
classifier over a few style features, fitted on the test set's own real user turns
(human) against its assistant turns (machine).
"""

from __future__ import annotations

import importlib
import math
import random
from typing import Callable

from userlm.data_prep.words import LIST_LINE, POLITENESS
from userlm.errors import UserError

STYLOMETRIC_LABEL = "offline stylometric baseline (nearest centroid: real user turns vs assistant turns of the test set)"
# Turns of each side the baseline is fitted on: enough for stable centroids, quick to measure.
FIT_TURNS = 500


def style_features(text: str) -> list[float]:
    """Style measures that separate chat users from assistants (casing, punctuation, layout, word choice).

    Length is left out on purpose: generated turns are cut at a token budget, so their
    length says more about the budget than about the writer.
    """
    stripped = text.strip()
    tokens = stripped.split()
    n_words = max(len(tokens), 1)
    letters = [c for c in stripped if c.isalpha()]
    return [
        sum(len(t) for t in tokens) / n_words,
        float(bool(stripped) and stripped[0].islower()),
        float(stripped.endswith((".", "!"))),
        float("?" in stripped),
        sum(c.isupper() for c in letters) / max(len(letters), 1),
        math.log1p(stripped.count("\n")),
        float(len(LIST_LINE.findall(stripped)) >= 2 or "```" in stripped),
        float(bool(POLITENESS.search(stripped))),
        stripped.count(",") / n_words,
    ]


class StylometricDetector:
    label = STYLOMETRIC_LABEL

    def __init__(self, human_texts: list[str], machine_texts: list[str]):
        if len(human_texts) < 2 or len(machine_texts) < 2:
            raise UserError("The stylometric naturalness baseline needs at least two user and two assistant turns in the test data.")
        human = [style_features(t) for t in human_texts]
        machine = [style_features(t) for t in machine_texts]
        both = human + machine
        dims = range(len(both[0]))
        self.mean = [sum(row[d] for row in both) / len(both) for d in dims]
        # A floor on the spread keeps a feature that never varies from dividing by zero.
        self.scale = [max(math.sqrt(sum((row[d] - self.mean[d]) ** 2 for row in both) / len(both)), 1e-6) for d in dims]
        self.human_centroid = self._centroid(human)
        self.machine_centroid = self._centroid(machine)

    def _standardise(self, row: list[float]) -> list[float]:
        return [(v - m) / s for v, m, s in zip(row, self.mean, self.scale)]

    def _centroid(self, rows: list[list[float]]) -> list[float]:
        scaled = [self._standardise(r) for r in rows]
        return [sum(col) / len(scaled) for col in zip(*scaled)]

    def __call__(self, texts: list[str]) -> list[float]:
        """Probability of human authorship: a softmax over minus the distances to the two centroids."""
        scores = []
        for text in texts:
            x = self._standardise(style_features(text))
            d_human = math.dist(x, self.human_centroid)
            d_machine = math.dist(x, self.machine_centroid)
            scores.append(1.0 / (1.0 + math.exp(d_human - d_machine)))
        return scores


def load_detector(spec: str) -> Callable[[list[str]], list[float]]:
    """Import a detector named `module:function` (or `module:Class`, instantiated with no arguments)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UserError(f"Name the naturalness detector as module:function, not {spec!r}.")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UserError(f"Could not import the naturalness detector {spec!r} ({error}); check that it is installed.") from error
    return target() if isinstance(target, type) else target


def human_share(detector: Callable[[list[str]], list[float]], texts: list[str]) -> float:
    """Share of texts whose human probability is above one half."""
    if not texts:
        raise ValueError("Naturalness needs at least one text.")
    return sum(p > 0.5 for p in detector(texts)) / len(texts)


def naturalness_detector(spec: str | None, samples: list[dict], scored: list[dict], seed: int) -> tuple[Callable[[list[str]], list[float]], str]:
    """(detector, label): the one named `module:function`, or the stylometric baseline fitted on
    the test set's real user turns (leaving out the `scored` ones) against its assistant turns."""
    if spec:
        detector = load_detector(spec)
        return detector, getattr(detector, "label", f"detector {spec}")
    rng = random.Random(seed)
    held = {(s["conversation_id"], s["turn_index"]) for s in scored}
    human = [s["completion"][0]["content"] for s in samples if not s["is_end"] and (s["conversation_id"], s["turn_index"]) not in held]
    assistant = sorted({m["content"] for s in samples for m in s["prompt"] if m["role"] == "assistant"})
    human = rng.sample(human, min(FIT_TURNS, len(human)))
    assistant = rng.sample(assistant, min(FIT_TURNS, len(assistant)))
    return StylometricDetector(human, assistant), STYLOMETRIC_LABEL

"""Naturalness: the share of generated user turns a detector calls human-written (docs/design.md#metrics).

The detector is pluggable: any importable callable `detect(texts: list[str]) -> list[float]`
returning, per text, the probability that a human wrote it (e.g. a wrapper around an
AI-text classifier), named as `module:function`. When none is given, the offline detector
below is used and every report labels it as such: a logistic regression over the opening
words of a text (which words occur, which word comes first) and a few style features,
trained on the train split's real user turns (human) against its assistant turns
(machine), or, for a test file without a train split beside it, on half of the test
conversations.

Every detector, named or offline, is validated on held-out turns it was not trained on
(the test split's real user turns against its assistant turns): the report gives its
accuracy there and the share of held-out real user turns it rates human, which docs/design.md#offline-proxies
asks to be at least 85%. That shows it tells users from assistants, not humans from models
writing as users: naturalness_validation.py checks that, and its AUC decides whether the
naturalness row means anything.

Texts are cut to their first OPENING_WORDS words before anything is measured: generated
turns stop at a token budget, so past that, length says more about the budget than about
the writer.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from userlm.errors import UserError
from userlm.flipped.samples import open_lines, split_files
from userlm.flipped.words import LIST_LINE, POLITENESS, words

from .logistic import fit_balanced_logistic

OPENING_WORDS = 30
VOCABULARY = 3000  # most frequent opening words of the training texts
FIRST_WORDS = 300  # most frequent first words
L2 = 1e-3


def opening(text: str) -> str:
    return " ".join(text.split()[:OPENING_WORDS])


def style_features(text: str) -> list[float]:
    """Style measures that separate chat users from assistants (casing, punctuation, layout, politeness)."""
    tokens = text.split()
    n_words = max(len(tokens), 1)
    letters = [c for c in text if c.isalpha()]
    return [
        sum(len(t) for t in tokens) / n_words,
        float(bool(text) and text[0].islower()),
        float(text.endswith((".", "!"))),
        float("?" in text),
        sum(c.isupper() for c in letters) / max(len(letters), 1),
        math.log1p(text.count("\n")),
        float(len(LIST_LINE.findall(text)) >= 2 or "```" in text),
        float(bool(POLITENESS.search(text))),
        text.count(",") / n_words,
        float(":" in text),
    ]


def word_features(text: str) -> list[str]:
    found = words(text)
    return [f"first={found[0]}" if found else "first="] + sorted(set(found))


class OfflineDetector:
    """Logistic regression over opening-word presence and standardised style features."""

    def __init__(self, human_texts: list[str], machine_texts: list[str], trained_on: str):
        if len(human_texts) < 2 or len(machine_texts) < 2:
            raise UserError(
                "The offline naturalness detector needs at least two user and two assistant "
                "turns to train on; give a larger test split."
            )
        import torch

        self.label = (
            f"offline detector (logistic regression on the first {OPENING_WORDS} "
            f"words; trained on {trained_on}), not a model"
        )
        texts = [opening(t.strip()) for t in human_texts + machine_texts]
        counts = Counter(f for t in texts for f in word_features(t))
        firsts = [f for f, _ in counts.most_common() if f.startswith("first=")][:FIRST_WORDS]
        others = [f for f, _ in counts.most_common() if not f.startswith("first=")][:VOCABULARY]
        self.index = {f: k for k, f in enumerate(firsts + others)}
        styles = [style_features(t) for t in texts]
        self.mean = [sum(col) / len(col) for col in zip(*styles)]
        # A floor on the spread keeps a feature that never varies from dividing by zero.
        self.scale = [
            max(math.sqrt(sum((v - m) ** 2 for v in col) / len(col)), 1e-6) for col, m in zip(zip(*styles), self.mean)
        ]
        y = torch.tensor([1.0] * len(human_texts) + [0.0] * len(machine_texts))
        self.w, self.b = fit_balanced_logistic(self._features(texts), y, L2, max_iter=200)

    def _features(self, texts: list[str]):
        import torch

        x = torch.zeros(len(texts), len(self.index) + len(self.mean))
        for row, text in enumerate(texts):
            for feature in word_features(text):
                if feature in self.index:
                    x[row, self.index[feature]] = 1.0
            style = [(v - m) / s for v, m, s in zip(style_features(text), self.mean, self.scale)]
            x[row, len(self.index) :] = torch.tensor(style)
        return x

    def __call__(self, texts: list[str]) -> list[float]:
        """Probability of human authorship of each text."""
        import torch

        with torch.no_grad():
            return torch.sigmoid(self._features([opening(t.strip()) for t in texts]) @ self.w + self.b).tolist()


def load_detector(spec: str) -> Callable[[list[str]], list[float]]:
    """Import a detector named `module:function` (or `module:Class`, instantiated with no arguments)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UserError(f"Name the naturalness detector as module:function, not {spec!r}.")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UserError(
            f"Could not import the naturalness detector {spec!r} ({error}); check that it is installed."
        ) from error
    return target() if isinstance(target, type) else target


def human_share(detector: Callable[[list[str]], list[float]], texts: list[str]) -> float:
    """Share of texts whose human probability is above one half."""
    if not texts:
        raise ValueError("Naturalness needs at least one text.")
    return sum(p > 0.5 for p in detector(texts)) / len(texts)


def user_and_assistant_turns(samples: list[dict]) -> tuple[list[str], list[str]]:
    """The real user turns (END left out) and the assistant turns of flipped samples, each once:
    an assistant turn is the last prompt message of the sample that follows it."""
    users = [s["completion"][0]["content"] for s in samples if not s["is_end"]]
    assistants = [s["prompt"][-1]["content"] for s in samples if s["prompt"][-1]["role"] == "assistant"]
    return users, assistants


def read_some_samples(path: Path, count: int, seed: int) -> list[dict]:
    """`count` lines drawn at random (reservoir sampling, one pass, no more than `count` kept) and parsed;
    lines that are not flipped samples are skipped."""
    rng = random.Random(seed)
    kept: list[str] = []
    for seen, (_, line) in enumerate(open_lines(path)):
        if seen < count:
            kept.append(line)
        elif (slot := rng.randrange(seen + 1)) < count:
            kept[slot] = line
    samples = []
    for line in kept:
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(sample, dict)
            and isinstance(sample.get("prompt"), list)
            and sample["prompt"]
            and isinstance(sample.get("completion"), list)
        ):
            samples.append(sample)
    return samples


@dataclass
class NaturalnessSetup:
    detector: Callable[[list[str]], list[float]]
    label: str
    validation: dict
    held_out: list[dict]  # the samples it was not trained on, for naturalness_validation.py


def in_fit_half(sample: dict) -> bool:
    """Half of the conversations, chosen by a stable hash of the id (the fallback when there is no train split)."""
    return zlib.crc32(sample["conversation_id"].encode()) % 2 == 0


def naturalness_setup(
    spec: str | None, data: Path, samples: list[dict], *, fit_samples: int, seed: int
) -> NaturalnessSetup:
    """The detector (named, else offline, trained as the module docstring says) and its held-out validation."""
    train = split_files(Path(data).parent).get("train")
    if train is not None and train.resolve() != Path(data).resolve():
        fit, held_out, trained_on = (
            read_some_samples(train, fit_samples, seed),
            samples,
            f"the train split ({train.name})",
        )
    else:
        fit, held_out = [s for s in samples if in_fit_half(s)], [s for s in samples if not in_fit_half(s)]
        trained_on = "half of the test conversations (no train split beside the test data), validated on the other half"
        if min(map(len, user_and_assistant_turns(fit) + user_and_assistant_turns(held_out))) < 2:
            fit = held_out = samples
            trained_on = (
                "all of the test data (too few conversations to hold half out), so validated on its own training turns"
            )
    if spec:
        detector = load_detector(spec)
        label = getattr(detector, "label", f"detector {spec}")
    else:
        humans, machines = user_and_assistant_turns(fit)
        rng = random.Random(seed)
        humans, machines = (rng.sample(t, min(fit_samples, len(t))) for t in (humans, machines))
        detector = OfflineDetector(
            humans, machines, f"{trained_on}: {len(humans)} user turns, {len(machines)} assistant turns"
        )
        label = detector.label
    return NaturalnessSetup(
        detector, label, validate_detector(detector, held_out, seed=seed, limit=fit_samples), held_out
    )


def validate_detector(detector, samples: list[dict], *, seed: int, limit: int) -> dict:
    """Accuracy on held-out real user turns against held-out assistant turns, in percent."""
    humans, machines = user_and_assistant_turns(samples)
    rng = random.Random(f"{seed}-validation")
    humans, machines = (rng.sample(t, min(limit, len(t))) for t in (humans, machines))
    if not humans or not machines:
        return {"accuracy": None, "n_user_turns": len(humans), "n_assistant_turns": len(machines)}
    human_rate, machine_rate = human_share(detector, humans), 1 - human_share(detector, machines)
    return {
        "accuracy": 100 * (human_rate * len(humans) + machine_rate * len(machines)) / (len(humans) + len(machines)),
        "user_turns_rated_human": 100 * human_rate,
        "assistant_turns_rated_machine": 100 * machine_rate,
        "n_user_turns": len(humans),
        "n_assistant_turns": len(machines),
    }

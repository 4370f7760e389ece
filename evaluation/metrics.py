"""The paper's word-level metrics as pure functions of text (docs/design.md#metrics).

Word tokenisation for every metric here is `flipped.words.words`; every report states it.
Values are returned as fractions in [0, 1]; reports multiply by 100 like the paper.
"""

from __future__ import annotations

import itertools

from userlm.flipped.format import END_MARKER, INTENT_PREFIX
from userlm.flipped.words import content_words, words

from .intervals import figure, mean_figure


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def pairwise_diversity(texts: list[str]) -> float:
    """1 − mean pairwise Jaccard index of the texts' unigram sets (the paper's first-turn diversity)."""
    if len(texts) < 2:
        raise ValueError("Diversity needs at least two texts.")
    sets = [set(words(t)) for t in texts]
    pairs = list(itertools.combinations(sets, 2))
    return 1.0 - sum(jaccard(a, b) for a, b in pairs) / len(pairs)


def intent_without_prefix(intent: str) -> str:
    text = intent.strip()
    if text.startswith(INTENT_PREFIX):
        text = text[len(INTENT_PREFIX) :]
    return text


def intent_overlap(turn: str, intent: str) -> float:
    """Share of the turn's distinct non-stopword unigrams that also occur in the intent (prefix removed).

    A turn with no content words copies nothing from the intent and scores 0.
    """
    turn_words = content_words(turn)
    if not turn_words:
        return 0.0
    return len(turn_words & content_words(intent_without_prefix(intent))) / len(turn_words)


def intent_decomposition(turns: list[str], intents: list[str]) -> float:
    """Mean intent overlap over (turn, intent) pairs; lower means the user reveals the intent gradually."""
    if len(turns) != len(intents) or not turns:
        raise ValueError("Intent decomposition needs one intent per turn and at least one turn.")
    return sum(intent_overlap(t, i) for t, i in zip(turns, intents)) / len(turns)


def f1_for_end(predicted_end: list[bool], real_end: list[bool]) -> dict:
    """Precision, recall and F1 of the END class (the model leaves) against the real conversation ends."""
    if len(predicted_end) != len(real_end):
        raise ValueError("Termination F1 needs one prediction per decision point.")
    tp = sum(p and r for p, r in zip(predicted_end, real_end))
    fp = sum(p and not r for p, r in zip(predicted_end, real_end))
    fn = sum(r and not p for p, r in zip(predicted_end, real_end))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (n-grams do not cross text boundaries)."""
    grams = [tuple(ws[i : i + n]) for ws in map(words, texts) for i in range(len(ws) - n + 1)]
    if not grams:
        return 0.0
    return len(set(grams)) / len(grams)


def word_metrics(first_turns: list[str], intents: list[str], groups: list[list[str]], *, seed: int) -> dict:
    """First-turn diversity, intent decomposition, within-intent diversity and distinct-n, in percent,
    each a figure with its 95% interval (intervals.py), resampled by intent (seeded).

    END turns carry no words; they are left out of the word metrics and counted.
    """
    kept = [(t, i) for t, i in zip(first_turns, intents) if t.strip() != END_MARKER]
    texts, ids = [t for t, _ in kept], [i for _, i in kept]
    result = {"ended_at_first_turn": len(first_turns) - len(kept)}
    if len(texts) >= 2:
        result["first_turn_diversity"] = figure("diversity", texts, seed=seed, ids=ids, unit="intent", scale=100)
    if texts:
        result["intent_decomposition"] = mean_figure(
            [intent_overlap(t, i) for t, i in kept], seed=seed, ids=ids, unit="intent", scale=100
        )
        result["distinct_1"] = figure("distinct_1", texts, seed=seed, ids=ids, unit="intent", scale=100)
        result["distinct_2"] = figure("distinct_2", texts, seed=seed, ids=ids, unit="intent", scale=100)
    usable = [(k, [t for t in g if t.strip() != END_MARKER]) for k, g in enumerate(groups)]
    usable = [(k, g) for k, g in usable if len(g) >= 2]
    if usable:
        # The k-th group is the k-th diversity intent for every checkpoint: k pairs them.
        result["within_intent_diversity"] = {
            **mean_figure(
                [pairwise_diversity(g) for _, g in usable],
                seed=seed,
                ids=[k for k, _ in usable],
                unit="intent",
                scale=100,
            ),
            "simulations": sum(len(g) for _, g in usable),
            "intents_left_out": len(groups) - len(usable),
        }
    return result

"""The paper's word-level metrics as pure functions of text (DESIGN.md 7).

Word tokenisation for every metric here: lowercase, then the regex `WORD_PATTERN`
(runs of letters, digits and inner apostrophes). It is stated in every report.
Values are returned as fractions in [0, 1]; reports multiply by 100 like the paper.
"""

from __future__ import annotations

import itertools
import re

from userlm.data_prep.format import INTENT_PREFIX

WORD_PATTERN = r"[a-z0-9]+(?:'[a-z0-9]+)*"
WORD_TOKENISATION = f"lowercase, then words are matches of the regex {WORD_PATTERN}"

# A small English stopword list, fixed here so results do not depend on an installed corpus.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
    during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here
    here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
    let's me more most mustn't my myself no nor not of off on once only or other ought our ours ourselves
    out over own same shan't she she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're they've this those through
    to too under until up very was wasn't we we'd we'll we're we've were weren't what what's when when's
    where where's which while who who's whom why why's will with won't would wouldn't you you'd you'll you're
    you've your yours yourself yourselves
    """.split()
)


def words(text: str) -> list[str]:
    return re.findall(WORD_PATTERN, text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS}


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


def within_intent_diversity(groups: list[list[str]]) -> float:
    """Mean over intents of the pairwise diversity among simulations of that one intent."""
    if not groups:
        raise ValueError("Within-intent diversity needs at least one group of simulations.")
    return sum(pairwise_diversity(g) for g in groups) / len(groups)

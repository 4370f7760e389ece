"""95% intervals for every figure of the report: a seeded percentile bootstrap over the unit the
items cluster in (conversations, users, intents, probes), and a paired bootstrap for a
checkpoint-minus-base difference; distinct-n, which a bootstrap cannot resample, gets a jackknife
over the same units (JACKKNIFED).

A figure is `{"value", "n", "ci": [lo, hi] or None, "unit", "units", "items"}`: n items measured,
resampled as `units` clusters of `unit`, and the items it was computed from (`items`: the
statistic's name, the items' values, their unit ids, the scale), kept so a difference with
another checkpoint can be resampled later, pair by pair. Build one with `figure` (any
statistic below) or `mean_figure` (per-item values whose mean is the figure).

Every statistic takes the items and a (resamples x items) matrix of weights, how often each
item was drawn, and returns one value per row: a resample is a weighting, so a conversation
drawn twice counts its points twice and a statistic stays a few numpy operations. Written
here rather than with `scipy.stats.bootstrap` (scipy is no dependency), which resamples items, not the clusters they
belong to, and fails on a resample where a statistic is undefined (an AUC without an end).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from userlm.flipped.words import words

LEVEL = 0.95
RESAMPLES = 2000


def _mean(values, weights):
    return weights @ np.asarray(values, dtype=float) / weights.sum(axis=1)


def _perplexity(values, weights):
    """exp(total NLL / total tokens) with items [summed NLL, tokens] (perplexity.perplexity)."""
    nll, tokens = np.asarray(values, dtype=float).T
    return np.exp((weights @ nll) / (weights @ tokens))


def _f1(values, weights):
    """F1 of END with items [predicted (or its probability), real]: metrics.f1_for_end, from expected counts."""
    predicted, real = np.asarray(values, dtype=float).T
    tp, fp, fn = weights @ (predicted * real), weights @ (predicted * (1 - real)), weights @ ((1 - predicted) * real)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


def _auc(values, weights):
    """ROC AUC with items [score, label] (roc.roc_auc, ties one half), weighted; NaN without both kinds."""
    scores, labels = np.asarray(values, dtype=float).T
    positive = labels > 0.5
    negatives = np.sort(scores[~positive])
    order = np.argsort(scores[~positive], kind="stable")
    # Cumulated weight of the negatives in score order: the weight below and at each positive's score.
    cumulated = np.concatenate(
        [np.zeros((len(weights), 1)), np.cumsum(weights[:, ~positive][:, order], axis=1)], axis=1
    )
    below = cumulated[:, np.searchsorted(negatives, scores[positive], side="left")]
    at_or_below = cumulated[:, np.searchsorted(negatives, scores[positive], side="right")]
    wins = ((below + at_or_below) / 2 * weights[:, positive]).sum(axis=1)
    pairs = weights[:, positive].sum(axis=1) * weights[:, ~positive].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


def _diversity(values, weights):
    """1 − mean pairwise Jaccard over texts (metrics.pairwise_diversity); two copies of one drawn text
    are not a pair (they would count as identical turns)."""
    from .metrics import jaccard  # metrics builds its figures here

    sets = [set(words(t)) for t in values]
    similarity = np.array([[jaccard(a, b) for b in sets] for a in sets])
    same = (weights**2) @ np.diag(similarity)
    pairs = weights.sum(axis=1) ** 2 - (weights**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (((weights @ similarity) * weights).sum(axis=1) - same) / pairs


def _distinct(n: int):
    def distinct(values, weights):
        """metrics.distinct_n over the texts a row keeps (weights 0 or 1: only the jackknife reads it)."""
        from .metrics import distinct_n  # metrics builds its figures here

        return np.array([distinct_n([values[i] for i in np.flatnonzero(row)], n) for row in weights])

    return distinct


STATISTICS: dict[str, Callable] = {
    "mean": _mean,
    "perplexity": _perplexity,
    "f1": _f1,
    "auc": _auc,
    "diversity": _diversity,
    "distinct_1": _distinct(1),
    "distinct_2": _distinct(2),
}
# Statistics a bootstrap cannot resample: distinct-n depends on how many texts it counts, and a
# resample holds fewer distinct texts (a copy's n-grams are all repeats, so copies cannot count):
# its interval leaned high, off its own value. These get a jackknife over the units instead.
JACKKNIFED = {"distinct_1", "distinct_2"}


def _estimate(items: dict, weights: np.ndarray) -> np.ndarray:
    return items.get("scale", 1) * STATISTICS[items["statistic"]](items["values"], weights)


def _unit_weights(ids: list, units: list, seed: int) -> np.ndarray:
    """(RESAMPLES x items) weights: units drawn with replacement, each item weighted by its unit's draws."""
    draws = np.random.default_rng(seed).multinomial(len(units), [1 / len(units)] * len(units), size=RESAMPLES)
    where = {u: k for k, u in enumerate(units)}
    return draws[:, [where[i] for i in ids]].astype(float)


def _percentiles(estimates: np.ndarray) -> list[float] | None:
    finite = estimates[np.isfinite(estimates)]
    if len(finite) < RESAMPLES / 2:
        return None  # most resamples leave the statistic undefined: no honest interval
    tail = 100 * (1 - LEVEL) / 2
    return [float(v) for v in np.percentile(finite, [tail, 100 - tail])]


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile by the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5: 4.17 for 4.30 at
    2 degrees of freedom, within 0.003 from 5): scipy is no dependency."""
    z = NormalDist().inv_cdf(p)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def _leave_one_out(items: dict, units: list) -> np.ndarray:
    """The statistic with each unit's items left out in turn, one value per unit."""
    where = {u: k for k, u in enumerate(units)}
    kept = np.ones((len(units), len(items["ids"])))
    kept[[where[i] for i in items["ids"]], range(len(items["ids"]))] = 0
    return _estimate(items, kept)


def _jackknife_se(left_out: np.ndarray) -> float | None:
    """The jackknife's standard error from the leave-one-unit-out values; None under three units."""
    k = len(left_out)
    if k < 3 or not np.all(np.isfinite(left_out)):
        return None
    return math.sqrt((k - 1) / k * float(((left_out - left_out.mean()) ** 2).sum()))


def _t_interval(value: float, se: float | None, df: int) -> list[float] | None:
    """value ± t·SE, t the 95% two-sided quantile with `df` degrees of freedom."""
    if se is None:
        return None
    half = _t_quantile(1 - (1 - LEVEL) / 2, df) * se
    return [value - half, value + half]


def figure(
    statistic: str, values: list, *, seed: int, ids: list | None = None, unit: str = "item", scale: float = 1
) -> dict:
    """A figure from per-item values: the statistic on all items, and its 95% percentile bootstrap
    interval over the units in `ids` (one id per item; None: every item its own unit), seeded (for
    JACKKNIFED statistics, the jackknife's t interval over the same units).

    `statistic` names one of STATISTICS; `scale` multiplies it (100 for a percentage)."""
    ids = list(range(len(values))) if ids is None else [str(i) for i in ids]
    items = {"statistic": statistic, "values": values, "ids": ids, "scale": scale}
    if not values:
        return {"value": None, "n": 0, "ci": None, "unit": unit, "units": 0, "items": items}
    units = list(dict.fromkeys(ids))
    value = float(_estimate(items, np.ones((1, len(values))))[0])
    if len(units) < 2 or not math.isfinite(value):
        ci = None
    elif statistic in JACKKNIFED:
        ci = _t_interval(value, _jackknife_se(_leave_one_out(items, units)), len(units) - 1)
        ci = ci and [max(ci[0], 0.0), min(ci[1], scale)]  # a share of n-grams: within 0 and all of them
    else:
        ci = _percentiles(_estimate(items, _unit_weights(ids, units, seed)))
    return {
        "value": value if math.isfinite(value) else None,
        "n": len(values),
        "ci": ci,
        "unit": unit,
        "units": len(units),
        "items": items,
    }


def mean_figure(
    values: list[float], *, seed: int, ids: list | None = None, unit: str = "item", scale: float = 1
) -> dict:
    """The figure whose value is the mean of per-item values (a share of 0/1 flags, a mean score):
    the helper for any new figure. E.g. mean_figure(hits, seed=config.seed, ids=conversation_ids,
    unit="conversation", scale=100) for a percentage of points, resampled by conversation."""
    return figure("mean", [float(v) for v in values], seed=seed, ids=ids, unit=unit, scale=scale)


def share_figure(percent: float | None, n: int, *, seed: int, unit: str) -> dict:
    """A share known only as a percentage of n independent items (k of them hits), as a figure."""
    hits = round((percent or 0) * n / 100)
    return mean_figure([1.0] * hits + [0.0] * (n - hits), seed=seed, unit=unit, scale=100)


def _restricted(items: dict, units: list) -> dict:
    keep = set(units)
    chosen = [k for k, i in enumerate(items["ids"]) if i in keep]
    return {**items, "values": [items["values"][k] for k in chosen], "ids": [items["ids"][k] for k in chosen]}


def difference(figure_a: dict, figure_b: dict, *, seed: int) -> dict | None:
    """figure_a − figure_b as {"value", "n", "ci", "paired", "shown"}: `shown` when the 95% interval
    excludes zero; n the units both have (paired) or the smaller sample (not paired).

    Paired where both figures were measured on the same units (the same conversations, intents,
    users): the difference on the units both have, each resample drawing the same units for both.
    Items without a unit of their own shared by both (a share known only by its count) are
    resampled independently."""
    a, b = figure_a.get("items"), figure_b.get("items")
    if not a or not b or a["statistic"] != b["statistic"] or figure_a["value"] is None or figure_b["value"] is None:
        return None
    paired = isinstance(a["ids"][0], str) and isinstance(b["ids"][0], str)
    units = None
    if paired:
        units = [u for u in dict.fromkeys(a["ids"]) if u in set(b["ids"])]
        if len(units) < 2:
            return None
        a, b = _restricted(a, units), _restricted(b, units)
    value = float(_estimate(a, np.ones((1, len(a["values"]))))[0] - _estimate(b, np.ones((1, len(b["values"]))))[0])
    if a["statistic"] in JACKKNIFED:
        ci = _jackknifed_difference(value, a, b, units)
    elif paired:
        ci = _percentiles(
            _estimate(a, _unit_weights(a["ids"], units, seed)) - _estimate(b, _unit_weights(b["ids"], units, seed))
        )
    else:
        weights_a = _unit_weights(a["ids"], list(dict.fromkeys(a["ids"])), seed)
        weights_b = _unit_weights(b["ids"], list(dict.fromkeys(b["ids"])), seed + 1)
        ci = _percentiles(_estimate(a, weights_a) - _estimate(b, weights_b))
    return {
        "value": value,
        "n": len(units) if paired else min(len(a["values"]), len(b["values"])),
        "ci": ci,
        "paired": paired,
        "shown": ci is not None and (ci[0] > 0 or ci[1] < 0),
    }


def _jackknifed_difference(value: float, a: dict, b: dict, units: list | None) -> list[float] | None:
    """The jackknife interval of a − b: paired, each shared unit left out of both at once; else the two
    jackknife variances added, with the smaller sample's degrees of freedom."""
    if units is not None:
        return _t_interval(value, _jackknife_se(_leave_one_out(a, units) - _leave_one_out(b, units)), len(units) - 1)
    own = [list(dict.fromkeys(x["ids"])) for x in (a, b)]
    se_a, se_b = (_jackknife_se(_leave_one_out(x, u)) for x, u in zip((a, b), own))
    if se_a is None or se_b is None:
        return None
    return _t_interval(value, math.sqrt(se_a**2 + se_b**2), min(map(len, own)) - 1)


def hanley_mcneil(auc: float, positives: int, negatives: int) -> list[float]:
    """The 95% interval of a ROC AUC from Hanley & McNeil (1982), the points taken as independent:
    AUC ± z·SE, SE² = (A(1−A) + (P−1)(Q1−A²) + (N−1)(Q2−A²)) / (P·N), Q1 = A/(2−A), Q2 = 2A²/(1+A)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt(
        (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (positives * negatives)
    )
    z = NormalDist().inv_cdf(1 - (1 - LEVEL) / 2)
    return [float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))]

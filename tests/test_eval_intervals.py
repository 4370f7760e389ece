"""The 95% intervals (evaluation/intervals.py) on hand-computed examples and known distributions,
the paired difference, and the generated README table (evaluation/table.py)."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from userlm.cli import main as userlm_main
from userlm.evaluation import metrics
from userlm.evaluation.intervals import difference, figure, hanley_mcneil, mean_figure, share_figure
from userlm.evaluation.perplexity import perplexity
from userlm.evaluation.roc import roc_auc

ROOT = Path(__file__).resolve().parents[1]
KEPT = "docs/results/quickstart-metrics.json"


def test_a_normal_mean_is_covered_at_about_the_stated_rate_over_seeds():
    # 300 samples of 40 from N(3, 1), each its own seed: the percentile bootstrap should cover 3 about 95% of the
    # time (a little less at n = 40). 300 trials: a binomial 95% band of about ±2.5 points around the true rate.
    covered = 0
    for seed in range(300):
        sample = np.random.default_rng(1000 + seed).normal(3.0, 1.0, size=40)
        lo, hi = mean_figure(list(sample), seed=seed)["ci"]
        covered += lo <= 3.0 <= hi
    assert 0.90 <= covered / 300 <= 0.98


def test_a_proportion_interval_by_hand_and_its_width():
    # Two items 0 and 1: resampled means are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the
    # 2.5th and 97.5th percentiles are 0 and 1.
    assert mean_figure([0, 1], seed=0)["ci"] == [0.0, 1.0]
    # A constant sample has no spread.
    assert mean_figure([2.5] * 10, seed=0)["ci"] == [2.5, 2.5]
    # 30 of 100: the normal approximation gives 30 ± 1.96·sqrt(0.3·0.7/100)·100 =
    # [21.0, 39.0]; the bootstrap is within a point.
    share = share_figure(30.0, 100, seed=0, unit="probe")
    assert share["value"] == pytest.approx(30.0) and share["n"] == 100 and share["unit"] == "probe"
    assert share["ci"][0] == pytest.approx(21.0, abs=1.5) and share["ci"][1] == pytest.approx(39.0, abs=1.5)


def test_the_same_seed_gives_the_same_interval():
    rng = random.Random(7)
    values = [rng.random() for _ in range(25)]
    assert mean_figure(values, seed=3)["ci"] == mean_figure(values, seed=3)["ci"]
    assert mean_figure(values, seed=3)["ci"] != mean_figure(values, seed=4)["ci"]


def test_clustered_items_are_resampled_by_their_unit():
    # 10 conversations of 5 identical points: as 50 independent points the interval is about sqrt(5) times too narrow.
    values = [float(v) for v in np.random.default_rng(0).normal(size=10) for _ in range(5)]
    conversations = [k // 5 for k in range(50)]
    clustered = figure("mean", values, seed=0, ids=conversations, unit="conversation")
    independent = mean_figure(values, seed=0)
    assert clustered["n"] == 50 and clustered["units"] == 10 and independent["units"] == 50
    width = lambda f: f["ci"][1] - f["ci"][0]  # noqa: E731
    assert width(clustered) / width(independent) == pytest.approx(math.sqrt(5), rel=0.2)


def test_each_statistic_on_all_items_is_the_metric_it_resamples():
    rng = random.Random(1)
    scores = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.9]) for _ in range(40)]  # many ties
    labels = [rng.random() < 0.3 for _ in range(40)]
    assert figure("auc", [[s, float(y)] for s, y in zip(scores, labels)], seed=0)["value"] == pytest.approx(
        roc_auc(scores, labels)
    )
    predicted = [rng.random() < 0.5 for _ in range(40)]
    f1 = figure("f1", [[float(p), float(y)] for p, y in zip(predicted, labels)], seed=0, scale=100)["value"]
    assert f1 == pytest.approx(100 * metrics.f1_for_end(predicted, labels)["f1"])
    texts = ["a b c", "A b d", "x y", "a b c d e", "hello there"]
    assert figure("diversity", texts, seed=0)["value"] == pytest.approx(metrics.pairwise_diversity(texts))
    assert figure("distinct_2", texts, seed=0)["value"] == pytest.approx(metrics.distinct_n(texts, 2))
    nlls = [(2.0, 1), (4.0, 3), (9.0, 2)]
    assert figure("perplexity", [list(p) for p in nlls], seed=0)["value"] == pytest.approx(perplexity(nlls))


def test_an_auc_resample_without_an_end_is_left_out():
    # One end among 20 points: most resamples still hold it, those that do not have no AUC and are dropped.
    auc = figure("auc", [[float(k), float(k == 19)] for k in range(20)], seed=0)
    assert auc["value"] == 1.0 and auc["ci"] == [1.0, 1.0]
    # No end at all: no AUC, no interval.
    assert figure("auc", [[float(k), 0.0] for k in range(5)], seed=0)["value"] is None


def zipf_texts(rng: np.random.Generator, count: int) -> list[str]:
    """`count` texts of 3 to 14 words drawn from a Zipf-like vocabulary of 300 words: repeats, as real turns have."""
    weights = 1 / np.arange(1, 301) ** 1.1
    weights /= weights.sum()
    return [" ".join(f"w{k}" for k in rng.choice(300, size=rng.integers(3, 15), p=weights)) for _ in range(count)]


@pytest.mark.parametrize("n", [1, 2])
def test_distinct_n_intervals_cover_their_value_and_the_truth_at_about_the_stated_rate(n):
    # The truth is distinct-n's expectation over corpora of 16 texts from the same source. A bootstrap that
    # recounted the distinct texts a resample drew leaned high: it covered its own value in 23 of 60 samples
    # and the truth in 26 of 60 for distinct-1. The jackknife covers both: 191 and 182 of 200 measured.
    rng = np.random.default_rng(0)
    truth = np.mean([metrics.distinct_n(zipf_texts(rng, 16), n) for _ in range(2000)])
    covered = 0
    for seed in range(200):
        texts = zipf_texts(np.random.default_rng(1000 + seed), 16)
        found = figure(f"distinct_{n}", texts, seed=seed, ids=[f"intent {k}" for k in range(16)], unit="intent")
        lo, hi = found["ci"]
        assert lo < found["value"] < hi and found["value"] == pytest.approx(metrics.distinct_n(texts, n))
        covered += lo <= truth <= hi
    assert 0.85 <= covered / 200 <= 0.99


def test_a_distinct_n_difference_is_paired_by_intent():
    rng = np.random.default_rng(3)
    texts = zipf_texts(rng, 20)
    intents = [f"intent {k}" for k in range(20)]
    varied = figure("distinct_1", texts, seed=0, ids=intents)
    same = difference(varied, figure("distinct_1", texts, seed=0, ids=intents), seed=0)
    assert same["paired"] and same["value"] == 0.0 and same["ci"] == [0.0, 0.0] and not same["shown"]
    # Each turn said three times over repeats every word: clearly less distinct, paired or not.
    repeated = figure("distinct_1", [" ".join([t] * 3) for t in texts], seed=0, ids=intents)
    for a, b in ((varied, repeated), ({**varied, "items": {**varied["items"], "ids": list(range(20))}}, repeated)):
        found = difference(a, b, seed=0)
        assert found["shown"] and found["ci"][0] < found["value"] < found["ci"][1]
        assert found["value"] == pytest.approx(varied["value"] - repeated["value"])


def test_hanley_mcneil_by_hand():
    # A = 0.8, 10 ends, 20 continues: Q1 = 0.8/1.2 = 0.6667, Q2 = 1.28/1.8 = 0.7111,
    # SE² = (0.16 + 9·0.02667 + 19·0.07111) / 200 = 1.75111 / 200, SE = 0.09357; 0.8 ± 1.96·SE.
    lo, hi = hanley_mcneil(0.8, 10, 20)
    assert lo == pytest.approx(0.8 - 1.959964 * 0.093571, abs=1e-4) and hi == pytest.approx(
        0.8 + 1.959964 * 0.093571, abs=1e-4
    )
    assert hanley_mcneil(1.0, 5, 5) == [1.0, 1.0]


def test_the_paired_difference():
    rng = np.random.default_rng(0)
    users = [f"user {k}" for k in range(30)]
    base = list(rng.normal(0, 5, size=30))  # users differ a lot from each other
    better = [
        b + 1.0 + e for b, e in zip(base, rng.normal(0, 0.3, size=30))
    ]  # each a little better than under the base
    paired = difference(mean_figure(better, seed=0, ids=users), mean_figure(base, seed=0, ids=users), seed=0)
    assert paired["paired"] and paired["n"] == 30 and paired["shown"]
    assert paired["value"] == pytest.approx(np.mean(better) - np.mean(base))
    assert paired["ci"][0] > 0.7 and paired["ci"][1] < 1.3
    # The same numbers without their users are two independent samples: the users' spread swamps the difference.
    unpaired = difference(mean_figure(better, seed=0), mean_figure(base, seed=0), seed=0)
    assert not unpaired["paired"] and not unpaired["shown"] and unpaired["ci"][0] < 0 < unpaired["ci"][1]
    # Only the users both measured are compared.
    fewer = difference(mean_figure(better[:20], seed=0, ids=users[:20]), mean_figure(base, seed=0, ids=users), seed=0)
    assert fewer["n"] == 20 and fewer["value"] == pytest.approx(np.mean(better[:20]) - np.mean(base[:20]))
    # A checkpoint against itself: zero, not shown.
    same = difference(mean_figure(base, seed=0, ids=users), mean_figure(base, seed=0, ids=users), seed=0)
    assert same["value"] == 0.0 and same["ci"] == [0.0, 0.0] and not same["shown"]


def test_the_readme_quickstart_table_is_the_generated_one(capsys):
    """README.md's quickstart table is `userlm eval table
    docs/results/quickstart-metrics.json`, pasted between its markers."""
    assert userlm_main(["eval", "table", str(ROOT / KEPT)]) == 0
    generated = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(rf"<!-- quickstart-table: {re.escape(KEPT)} -->\n(.*?)<!-- /quickstart-table -->", readme, re.S)
    assert block is not None, f"README.md has no quickstart-table block for {KEPT}"
    assert block.group(1).strip() == generated.strip()

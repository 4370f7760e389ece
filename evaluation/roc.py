"""ROC curve and ROC AUC of scores against binary labels, as pure functions.

Written here rather than taken from scikit-learn, which is not a dependency: a few lines
each. The AUC is the Mann-Whitney statistic: the probability that a random positive
scores above a random negative, ties counting one half (so a constant score gives 0.5).
"""

from __future__ import annotations


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve; needs at least one positive and one negative."""
    if len(scores) != len(labels):
        raise ValueError("ROC AUC needs one score per label.")
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError("ROC AUC needs at least one positive and one negative.")
    # Rank-sum with average ranks over ties.
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(r for r, label in zip(ranks, labels) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def roc_curve(scores: list[float], labels: list[bool]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError("A ROC curve needs at least one positive and one negative.")
    points = [(0.0, 0.0)]
    tp = fp = 0
    pairs = sorted(zip(scores, labels), key=lambda pair: -pair[0])
    for k, (score, label) in enumerate(pairs):
        tp += label
        fp += not label
        # Tied scores move together: one point per distinct threshold.
        if k + 1 == len(pairs) or pairs[k + 1][0] != score:
            points.append((fp / negatives, tp / positives))
    return points

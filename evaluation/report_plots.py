"""The report's plots as PNG bytes (matplotlib, no window): one bar chart per metric, the ROC
curves of P(end) with the chance line, and the persona contrast's words per turn."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

MEASURED, PUBLISHED, REFERENCE = "#3b75af", "#bbbbbb", "#8c8c8c"


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_metric(title: str, rows: list[dict], labels: list[str], *, log_scale: bool = False) -> bytes | None:
    """A horizontal bar chart of one metric with each measured row's 95% interval as an error bar;
    published and reference rows hatched and grey."""
    shown = [(r, label) for r, label in zip(rows, labels) if r["value"] is not None]
    if not shown:
        return None
    figure, axes = plt.subplots(figsize=(7.5, 0.45 * len(shown) + 1.2), dpi=100)
    grey = [not r["kind"].startswith("measured") for r, _ in shown]
    values = [r["value"] for r, _ in shown]
    intervals = [r.get("ci") or (v, v) for (r, _), v in zip(shown, values)]
    bars = axes.barh(
        [r["source"] for r, _ in shown],
        values,
        color=[PUBLISHED if g else MEASURED for g in grey],
        xerr=[
            [max(0.0, v - lo) for v, (lo, _) in zip(values, intervals)],
            [max(0.0, hi - v) for v, (_, hi) in zip(values, intervals)],
        ],
        error_kw={"ecolor": "black", "capsize": 3, "linewidth": 1},
    )
    for bar, is_grey in zip(bars, grey):
        if is_grey:
            bar.set_hatch("//")
    axes.bar_label(bars, labels=[label for _, label in shown], padding=3, fontsize=8)
    if log_scale:
        axes.set_xscale("log")
    axes.invert_yaxis()
    axes.set_title(title, fontsize=10)
    axes.margins(x=0.15)
    return png(figure)


def plot_roc(curves: dict[str, tuple[list[tuple[float, float]], float]]) -> bytes | None:
    """ROC curves of P(end) against the real ends, one per checkpoint (name -> (curve, AUC)), and chance."""
    if not curves:
        return None
    figure, axes = plt.subplots(figsize=(5.5, 5.5), dpi=100)
    for name, (curve, auc) in curves.items():
        axes.plot([x for x, _ in curve], [y for _, y in curve], drawstyle="steps-post", label=f"{name} (AUC {auc:.2f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color=REFERENCE, label="chance (AUC 0.50)")
    axes.set_xlabel("false positive rate (continue points scored above the threshold)")
    axes.set_ylabel("true positive rate (real ends scored above the threshold)")
    axes.set_title("Termination: ROC of P(end as the first token)", fontsize=10)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    # Below the axes: inside, the legend hid the curves' lower left, where the ranking differs.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    return png(figure)


def plot_contrast(words_per_turn: dict[str, tuple[float, float]]) -> bytes | None:
    """Words per turn under the terse and the elaborate persona, side by side per checkpoint."""
    if not words_per_turn:
        return None
    names = list(words_per_turn)
    figure, axes = plt.subplots(figsize=(7.5, 0.7 * len(names) + 1.4), dpi=100)
    positions = range(len(names))
    terse = axes.barh(
        [p - 0.2 for p in positions],
        [words_per_turn[n][0] for n in names],
        height=0.4,
        color=PUBLISHED,
        label="terse persona",
    )
    elaborate = axes.barh(
        [p + 0.2 for p in positions],
        [words_per_turn[n][1] for n in names],
        height=0.4,
        color=MEASURED,
        label="elaborate persona",
    )
    for bars in (terse, elaborate):
        axes.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
    axes.set_yticks(list(positions), names)
    axes.invert_yaxis()
    axes.set_xlabel("words per turn")
    axes.set_title("Persona contrast: the same intents under two opposite personas", fontsize=10)
    axes.legend(fontsize=8)
    axes.margins(x=0.15)
    return png(figure)

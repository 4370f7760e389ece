"""Termination without luck (docs/design.md#metrics): the probability the model gives to ending as the
first token of its turn at every decision point, and its ROC AUC against the real ends.

P(end) at a point is the probability of the turn that holds only the end marker, read
token by token up to the marker: with `chatml`, whose prompt ends with the open user
header, the marker's probability as the next token; with `userlm-llama3`, whose turns open
with "\\n", P("\\n") x P(end | "\\n"), both from the same forward pass with the opening
appended. A vocabulary without the marker spells it in several tokens, and P(end) is then
the probability of writing it out (tiny, as it should be).

At most one forward pass per point, batched: within a conversation an earlier point's
prompt is a prefix of a later one's, and where the real user's next turn begins with the
end turn's opening tokens (always "\\n" for `userlm-llama3`; nothing to check for
`chatml`), the earlier point is read from the later point's pass, logits being causal.
This is checked token by token; a point that does not share gets its own row.
"""

from __future__ import annotations

import math
import statistics

from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import FlippedTemplate, render

from .forward import logprobs_at
from .intervals import figure, hanley_mcneil
from .roc import roc_curve


def end_tokens(tokenizer, template: FlippedTemplate) -> list[int]:
    """The token ids of a turn that is only the end marker, up to the marker: its opening, then the marker."""
    return tokenizer(template.turn_opening + END_MARKER, add_special_tokens=False)["input_ids"]


def end_rows(
    tokenizer, template: FlippedTemplate, points: list[dict]
) -> tuple[list[list[int]], list[list[tuple[int, int]]], list[list[int]]]:
    """(rows, their (position, token) queries, the point each query belongs to) for `forward.logprobs_at`."""
    ends = end_tokens(tokenizer, template)
    rows: list[list[int]] = []
    queries: list[list[tuple[int, int]]] = []
    owners: list[list[int]] = []
    by_conversation: dict[str, list[int]] = {}
    for i, point in enumerate(points):
        by_conversation.setdefault(point["conversation_id"], []).append(i)
    for members in by_conversation.values():
        shared: list[int] = []  # this conversation's rows, longest first
        for i in sorted(members, key=lambda k: -len(points[k]["prompt"])):
            ids = tokenizer(render(tokenizer, template, points[i]["prompt"]), add_special_tokens=False)["input_ids"]
            n = len(ids)
            # The end turn's tokens but the last must follow the prompt in the row, as the model reads them.
            home = next((r for r in shared if rows[r][:n] == ids and rows[r][n : n + len(ends) - 1] == ends[:-1]), None)
            if home is None:
                home = len(rows)
                rows.append(ids + ends[:-1])
                queries.append([])
                owners.append([])
                shared.append(home)
            # Token j of the end turn is predicted after reading position n - 1 + j.
            queries[home] += [(n - 1 + j, token) for j, token in enumerate(ends)]
            owners[home] += [i] * len(ends)
    return rows, queries, owners


def end_probabilities(
    simulator, points: list[dict], *, batch_size: int = 8, progress: bool = True, desc: str = "P(end)"
) -> list[float]:
    """P(end as the first token of the turn) at every point, in point order."""
    return end_scores(simulator, points, batch_size=batch_size, progress=progress, desc=desc)[0]


def end_scores(
    simulator,
    points: list[dict],
    *,
    top_p: float | None = None,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "P(end)",
) -> tuple[list[float], list[float] | None]:
    """P(end) at every point, in point order, and with `top_p` the probability that sampling at
    temperature 1 with that top-p ends there (each token of the end turn drawn inside its nucleus;
    None without `top_p`), from the same forward pass."""
    tokenizer = simulator.tokenizer
    rows, queries, owners = end_rows(tokenizer, simulator.template, points)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored = logprobs_at(
        simulator.model, rows, queries, pad_id=pad_id, batch_size=batch_size, progress=progress, desc=desc, top_p=top_p
    )
    log_p = [0.0] * len(points)
    sampled = [1.0] * len(points)
    for values, owner in zip(scored, owners):
        for value, i in zip(values, owner):
            if top_p is None:
                log_p[i] += value
            else:
                log_p[i] += value[0]
                sampled[i] *= value[1]
    return [math.exp(v) for v in log_p], (sampled if top_p is not None else None)


def expected_f1(
    sampled: list[float], real_ends: list[bool], *, conversations: list[str] | None = None, seed: int = 0
) -> dict:
    """F1 of END from expected counts, when each point ends with its sampling probability: the sampled
    termination F1 without its luck (the ratio of expectations, near the expected F1 over many points),
    in percent, its interval resampling `conversations` (each point's; None: the points)."""
    tp = sum(p for p, end in zip(sampled, real_ends) if end)
    fp = sum(p for p, end in zip(sampled, real_ends) if not end)
    fn = sum(1 - p for p, end in zip(sampled, real_ends) if end)
    return {
        **figure(
            "f1",
            [[p, float(end)] for p, end in zip(sampled, real_ends)],
            seed=seed,
            ids=conversations,
            unit="conversation" if conversations else "point",
            scale=100,
        ),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "expected_ends": tp + fp,
        "real_end_points": sum(real_ends),
    }


def end_probability_metrics(
    probabilities: list[float], real_ends: list[bool], *, conversations: list[str] | None = None, seed: int = 0
) -> dict:
    """ROC AUC of P(end) against the real ends (the value, with its interval resampling `conversations`,
    each point's; None: the points), the ROC curve and P(end) at both kinds of point."""
    at_ends = [p for p, end in zip(probabilities, real_ends) if end]
    at_continues = [p for p, end in zip(probabilities, real_ends) if not end]
    both = bool(at_ends) and bool(at_continues)
    auc = figure(
        "auc",
        [[p, float(end)] for p, end in zip(probabilities, real_ends)],
        seed=seed,
        ids=conversations,
        unit="conversation" if conversations else "point",
    )
    return {
        **auc,
        # The textbook interval, the points taken as independent: beside the
        # bootstrap's, it shows what the clustering costs.
        "ci_hanley_mcneil": hanley_mcneil(auc["value"], len(at_ends), len(at_continues))
        if auc["value"] is not None
        else None,
        "real_end_points": len(at_ends),
        "mean_at_ends": statistics.fmean(at_ends) if at_ends else None,
        "mean_at_continues": statistics.fmean(at_continues) if at_continues else None,
        "median_at_ends": statistics.median(at_ends) if at_ends else None,
        "median_at_continues": statistics.median(at_continues) if at_continues else None,
        "roc": roc_curve(probabilities, real_ends) if both else [],
    }

"""Termination obeys scope: told in its intent how long the user stays, does the simulator leave then?

A controllability figure, apart from *when* real users leave (end_probability.py, on points
whose intent states no length). Each held-out conversation's first two decision points are
read, as they are, with the intent stating each of three lengths in turn: "A single answer is
all you are after." (leave after turn 1), "You follow up once." (after turn 2) and "You follow
up a few times." (3 or 4 turns: with two points read, what shows is that it did not leave by
turn 2). From the probability that sampling ends the turn at each point (the P(end) pass,
top-p as generation samples), the simulator leaves at turn 1 with p1, at turn 2 with
(1 − p1)·p2 and later with (1 − p1)(1 − p2); those three outcomes partition what it does, so
a simulator that ignores the stated length is on time in exactly a third of the cases, whatever
it does otherwise. No generation: three P(end) passes a conversation (a trained simulator reads
both points in one).
"""

from __future__ import annotations

from userlm.flipped.scope import SCOPES, rescoped

from .end_probability import end_scores
from .intervals import mean_figure

# The stated lengths read, and the decision points that decide them.
STATED = SCOPES[:3]
POINTS_READ = 2
CHANCE = 100 / len(STATED)


def outcomes(p1: float, p2: float) -> list[tuple[float, float, float]]:
    """(early, on time, late) for each stated length, from the chances of leaving at the two points."""
    first, second, later = p1, (1 - p1) * p2, (1 - p1) * (1 - p2)
    return [(0.0, first, second + later), (first, second, later), (first + second, later, 0.0)]


def obeys_scope(
    simulator,
    points: list[dict],
    *,
    top_p: float,
    seed: int,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "obeys scope",
) -> dict:
    """The share of (conversation, stated length) pairs where the simulator leaves on time, early and
    late, in percent, each with its interval over conversations; `points` are the conversations' first
    two decision points (`subsets.scope_points`)."""
    by_conversation: dict[str, dict[int, dict]] = {}
    for point in points:
        by_conversation.setdefault(point["conversation_id"], {})[point["turn_index"]] = point
    conversations = [c for c, kept in by_conversation.items() if len(kept) == POINTS_READ]  # both points still fit
    # One conversation id per (conversation, stated length): end_rows shares a pass only among its own points.
    read = [
        {
            **by_conversation[c][turn],
            "prompt": rescoped(by_conversation[c][turn]["prompt"], sentence),
            "conversation_id": f"{c}|{k}",
        }
        for c in conversations
        for k, sentence in enumerate(STATED)
        for turn in range(1, POINTS_READ + 1)
    ]
    _, sampled = end_scores(simulator, read, top_p=top_p, batch_size=batch_size, progress=progress, desc=desc)
    pairs = [
        sampled[i : i + POINTS_READ] for i in range(0, len(sampled), POINTS_READ)
    ]  # (p1, p2) per conversation and length
    # Each conversation's (early, on time, late) under each stated length.
    per_conversation = [
        [outcomes(*pairs[c * len(STATED) + s])[s] for s in range(len(STATED))] for c in range(len(conversations))
    ]

    def share(which: int, stated: list[int]) -> dict:
        values = [sum(row[s][which] for s in stated) / len(stated) for row in per_conversation]
        return mean_figure(values, seed=seed, ids=conversations, unit="conversation", scale=100)

    every = list(range(len(STATED)))
    return {
        **share(1, every),
        "early": share(0, every),
        "late": share(2, every),
        "chance": CHANCE,
        "by_stated_length": {
            sentence: {"on_time": share(1, [s]), "early": share(0, [s]), "late": share(2, [s])}
            for s, sentence in enumerate(STATED)
        },
    }

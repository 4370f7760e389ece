"""Termination F1 (docs/design.md#metrics): at each real point of a held-out conversation, does the model leave?

A decision point is every place where the real user had to choose: right after each
assistant turn. In the flipped test set these are exactly the samples whose prompt ends
with an assistant message; the real answer is the sample's `is_end`. A conversation cut
mid-way (`meta.ends` False) has no end sample, so it contributes only "continue" points.
Evaluation reads these points with the intent's scope sentence taken out (subsets.py): it states
the conversation's length, and so the answer.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from .intervals import figure
from .metrics import f1_for_end


def decision_points(samples: list[dict]) -> list[dict]:
    return [s for s in samples if s["prompt"][-1]["role"] == "assistant"]


def predict_ends(
    simulator, points: list[dict], *, seed: int, max_new_tokens: int, batch_size: int, progress: bool = True
) -> list[bool]:
    """Sample the simulator's next turn at every point (unguarded) and read whether it ended."""
    predicted: list[bool] = []
    with tqdm(total=len(points), desc="termination", unit="point", disable=not progress) as bar:
        for start in range(0, len(points), batch_size):
            batch = points[start : start + batch_size]
            turns = simulator.generate(
                [p["prompt"] for p in batch], guardrails=None, seed=seed + start, max_new_tokens=max_new_tokens
            )
            predicted.extend(turn.is_end for turn in turns)
            bar.update(len(batch))
    return predicted


def termination_f1(
    simulator,
    points: list[dict],
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """F1 of the END class over the decision points in percent, with its interval over conversations,
    its precision, recall and counts."""
    predicted = predict_ends(
        simulator, points, seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    real = [bool(p["is_end"]) for p in points]
    counts = {k: v for k, v in f1_for_end(predicted, real).items() if k != "f1"}
    return {
        **figure(
            "f1",
            [[float(a), float(b)] for a, b in zip(predicted, real)],
            seed=seed,
            ids=[p["conversation_id"] for p in points],
            unit="conversation",
            scale=100,
        ),
        **counts,
        "real_end_points": sum(real),
        "predicted_end_points": sum(predicted),
    }

"""Leaves because it was served well (issue 25): P(end) right after a full, correct answer and right
after a bad one, on the same intents and first turns.

Each probe (leave_probes.jsonl, shipped; or a file of the same shape) is an intent, the user's
first turn, a good answer that does the whole task and a bad answer: a refusal or an answer
about something else. The simulator reads [intent, first turn, answer] and P(end) is read at
its next turn, teacher-forced (end_probability.py). A simulator that learnt *why* users leave
leaves more often after the good answer: the per-intent difference good − bad is its figure,
with a bootstrap interval over intents; the prompted base is its reference. The intents state
no scope sentence: how long the user stays must come from the answer, not from the intent.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from userlm.errors import UserError
from userlm.flipped.format import system_text
from userlm.flipped.samples import open_lines

from .end_probability import end_scores
from .intervals import mean_figure

FIELDS = ("id", "intent", "first_turn", "good_answer", "bad_answer", "bad_kind")
BAD_KINDS = ("refusal", "off_topic")


def shipped_probes() -> Path:
    return Path(str(files("userlm.evaluation") / "leave_probes.jsonl"))


def probe_problem(probe) -> str | None:
    """Why a parsed line is not a usable probe, or None."""
    if not isinstance(probe, dict):
        return "the line is not a JSON object"
    missing = [k for k in FIELDS if not isinstance(probe.get(k), str) or not probe[k].strip()]
    if missing:
        return f"{', '.join(missing)} missing or not a non-empty text"
    if probe["bad_kind"] not in BAD_KINDS:
        return f"bad_kind is {probe['bad_kind']!r}, not one of {', '.join(BAD_KINDS)}"
    return None


def read_probes(path: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """The probes of `path` (None: the shipped set) and the lines that could not be used (with reasons)."""
    path = shipped_probes() if path is None else Path(path)
    if not path.is_file():
        raise UserError(f"No leave probes at {path}; give a JSONL file with {', '.join(FIELDS)} per line.")
    probes, bad, seen = [], [], set()
    for number, line in open_lines(path):
        if not line.strip():
            continue
        try:
            probe = json.loads(line)
        except json.JSONDecodeError:
            bad.append({"line": number, "reason": "invalid_json"})
            continue
        problem = probe_problem(probe)
        if problem is None and probe["id"] in seen:
            problem = f"the id {probe['id']!r} is used twice"
        if problem is not None:
            bad.append({"line": number, "reason": "not_a_probe", "detail": problem})
            continue
        seen.add(probe["id"])
        probes.append(probe)
    if len(probes) < 2:
        raise UserError(f"{path} holds fewer than two usable leave probes; give one per line with {', '.join(FIELDS)}.")
    return probes, bad


def probe_point(probe: dict, kind: str) -> dict:
    """The decision point right after the probe's `kind` ("good" or "bad") answer, as eval's decision points."""
    return {
        "prompt": [
            {"role": "system", "content": system_text(probe["intent"])},
            {"role": "user", "content": probe["first_turn"]},
            {"role": "assistant", "content": probe[f"{kind}_answer"]},
        ],
        "conversation_id": f"{probe['id']}/{kind}",
    }


def leave_probe(
    simulator,
    path: str | Path | None = None,
    *,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
    scale: float = 1.0,
) -> dict:
    """P(end) after each probe's good and bad answer: the mean of each and the per-intent difference
    good − bad, each a figure of intervals.py resampled over intents (P(end) times `scale`: 100 for percent),
    so a checkpoint's difference can be compared with the base's pair by pair
    (`intervals.difference(a["good_minus_bad"], b["good_minus_bad"], seed=...)`)."""
    probes, bad_lines = read_probes(path)
    points = [probe_point(p, "good") for p in probes] + [probe_point(p, "bad") for p in probes]
    probabilities, _ = end_scores(simulator, points, batch_size=batch_size, progress=progress, desc="leave probe")
    good, bad = probabilities[: len(probes)], probabilities[len(probes) :]
    ids = [p["id"] for p in probes]

    def figure_of(values: list[float], chosen: list[int] | None = None) -> dict:
        chosen = range(len(values)) if chosen is None else chosen
        return mean_figure(
            [values[k] for k in chosen], seed=seed, ids=[ids[k] for k in chosen], unit="intent", scale=scale
        )

    by_kind = {kind: [k for k, p in enumerate(probes) if p["bad_kind"] == kind] for kind in BAD_KINDS}
    return {
        "after_good": figure_of(good),
        "after_bad": figure_of(bad),
        "good_minus_bad": figure_of([g - b for g, b in zip(good, bad)]),
        **{f"after_{kind}": figure_of(bad, chosen) for kind, chosen in by_kind.items() if chosen},
        "probes": len(probes),
        "source": str(shipped_probes() if path is None else path),
        "unusable_lines": len(bad_lines),
        "unusable_examples": bad_lines[:20],
        "per_intent": [
            {"id": p["id"], "bad_kind": p["bad_kind"], "after_good": g, "after_bad": b}
            for p, g, b in zip(probes, good, bad)
        ],
    }

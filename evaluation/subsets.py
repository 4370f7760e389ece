"""The held-out samples and the evaluation subsets drawn from them once, shared by every checkpoint.

Drawing once (seeded) lets the columns of a report compare like with like: every
checkpoint and the human reference are measured on the same turns, intents and points.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from userlm.data_prep.format import parse_system_text
from userlm.data_prep.samples import open_lines
from userlm.errors import UserError

from .config import EvalConfig
from .termination import decision_points


@dataclass
class EvalSubsets:
    perplexity: list[dict]
    first_turns: list[dict]
    termination_points: list[dict]
    probe_openings: list[dict]
    diversity: list[dict]
    counts: dict = field(default_factory=dict)


def read_samples(path: Path) -> tuple[list[dict], list[dict]]:
    """Flipped samples from a JSONL (or JSONL.gz) file, and the lines that could not be used (with reasons)."""
    samples, bad = [], []
    for number, line in open_lines(path):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            bad.append({"line": number, "reason": "invalid_json"})
            continue
        if not isinstance(sample, dict) or not sample.get("prompt") or not sample.get("completion"):
            bad.append({"line": number, "reason": "not_a_flipped_sample"})
            continue
        samples.append(sample)
    if not samples:
        raise UserError(f"{path} holds no flipped samples; give the test.jsonl that `userlm prep` wrote.")
    return samples, bad


def sample_chars(sample: dict) -> int:
    return sum(len(m["content"]) for m in sample["prompt"]) + len(sample["completion"][0]["content"])


def intent_of(sample: dict) -> str:
    """The intent alone: the system message without its persona block."""
    return parse_system_text(sample["prompt"][0]["content"])[0]


def draw_subsets(samples: list[dict], config: EvalConfig) -> EvalSubsets:
    rng = random.Random(config.seed)
    fits = [s for s in samples if sample_chars(s) <= config.max_sample_chars]
    scored = rng.sample(fits, min(config.perplexity_samples, len(fits)))

    # One first turn per distinct intent, so diversity compares different intents.
    by_intent: dict[str, dict] = {}
    for s in samples:
        if s["turn_index"] == 0 and not s["is_end"] and s["prompt"][0]["role"] == "system":
            by_intent.setdefault(s["prompt"][0]["content"], s)
    openings = list(by_intent.values())
    rng.shuffle(openings)
    first_turns = openings[: config.first_turn_intents]

    # Whole conversations, so each keeps all its points; its last point is its longest, and
    # dropping only over-long points would drop the END points first.
    points = decision_points(samples)
    longest: dict[str, int] = {}
    for p in points:
        longest[p["conversation_id"]] = max(longest.get(p["conversation_id"], 0), sample_chars(p))
    eligible = sorted(c for c, n in longest.items() if n <= config.max_sample_chars)
    chosen = set(rng.sample(eligible, min(config.termination_conversations, len(eligible))))
    return EvalSubsets(
        perplexity=scored,
        first_turns=first_turns,
        termination_points=[p for p in points if p["conversation_id"] in chosen],
        probe_openings=[s for s in first_turns if sample_chars(s) <= config.max_sample_chars][: config.probes_per_kind],
        diversity=first_turns[: config.diversity_intents],
        counts={
            "samples_longer_than_max_chars": len(samples) - len(fits),
            "conversations_longer_than_max_chars": len(longest) - len(eligible),
            "termination_conversations": len(chosen),
            "distinct_intents_available": len(openings),
        },
    )

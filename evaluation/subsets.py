"""The held-out samples and the evaluation subsets drawn from them once, shared by every checkpoint.

Drawing once (seeded) lets the columns of a report compare like with like: every
checkpoint and the human reference are measured on the same turns, intents and points.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from userlm.errors import UserError
from userlm.flipped.format import parse_system_text
from userlm.flipped.samples import iter_conversations, open_lines
from userlm.flipped.scope import rescoped

from .config import EvalConfig
from .obeys_scope import POINTS_READ
from .persona_fidelity import HeldOutUser, held_out_users
from .termination import decision_points


@dataclass
class EvalSubsets:
    perplexity: list[dict]
    first_turns: list[dict]
    termination_points: list[dict]
    probe_openings: list[dict]
    diversity: list[dict]
    end_points: list[dict] = field(default_factory=list)
    scope_points: list[dict] = field(default_factory=list)
    persona_users: list[HeldOutUser] = field(default_factory=list)
    contrast_intents: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def is_message(message, roles: tuple[str, ...]) -> bool:
    return isinstance(message, dict) and message.get("role") in roles and isinstance(message.get("content"), str)


def sample_problem(sample) -> str | None:
    """Why a parsed line is not a flipped sample (docs/design.md#flipped-samples) evaluation can use, or None."""
    if not isinstance(sample, dict):
        return "the line is not a JSON object"
    prompt, completion = sample.get("prompt"), sample.get("completion")
    if (
        not isinstance(prompt, list)
        or not prompt
        or not all(is_message(m, ("system", "user", "assistant")) for m in prompt)
    ):
        return "prompt is not a non-empty list of {role, content} messages with text contents"
    if not isinstance(completion, list) or len(completion) != 1 or not is_message(completion[0], ("user",)):
        return "completion is not one user message with a text content"
    if not isinstance(sample.get("conversation_id"), str) or not sample["conversation_id"]:
        return "conversation_id is not a text"
    if type(sample.get("turn_index")) is not int or type(sample.get("is_end")) is not bool:
        return "turn_index is not a whole number or is_end is not true or false"
    return None


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
        problem = sample_problem(sample)
        if problem is not None:
            bad.append({"line": number, "reason": "not_a_flipped_sample", "detail": problem})
            continue
        samples.append(sample)
    if not samples:
        raise UserError(
            f"{path} holds no flipped samples; give the folder (or its test.jsonl) that `userlm prep` wrote."
        )
    return samples, bad


def conversation_users(data: Path) -> dict[str, str]:
    """conversation_id -> user_id, from the conversations file `userlm prep` wrote beside the samples;
    empty when there is none or it cannot be read (each conversation then stands in for its user,
    and the report says the users were unknown)."""
    try:
        return {
            r["conversation_id"]: r["user_id"]
            for r in iter_conversations(Path(data).parent)
            if isinstance(r, dict) and isinstance(r.get("user_id"), str) and isinstance(r.get("conversation_id"), str)
        }
    except (UserError, json.JSONDecodeError):
        return {}


def prompt_chars(sample: dict) -> int:
    return sum(len(m["content"]) for m in sample["prompt"])


def sample_chars(sample: dict) -> int:
    return prompt_chars(sample) + len(sample["completion"][0]["content"])


def intent_of(sample: dict) -> str:
    """The intent alone: the system message without its persona block."""
    return parse_system_text(sample["prompt"][0]["content"])[0]


def draw_subsets(samples: list[dict], config: EvalConfig, users: dict[str, str] | None = None) -> EvalSubsets:
    """The subsets every checkpoint is measured on; `users` maps conversations to their users (persona fidelity)."""
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

    # Decision points are kept by their prompt, what the model reads: each conversation is cut
    # where its prompt outgrows the limit (its points' prompts only grow), keeping the points
    # before the cut, as a log cut mid-way is. Whether a point is kept never depends on what the
    # real user did there. (Keeping only whole conversations that fit kept mostly conversations
    # that ended soon: on the quickstart's test split 45 of those 56 points were ends, against
    # 418 of all 2,451.)
    all_points = decision_points(samples)
    points = [p for p in all_points if prompt_chars(p) <= config.max_sample_chars]
    # *When* a user leaves is read without the intent's scope sentence: written from the conversation's
    # length, it states the answer at every point (docs/evaluation.md).
    unscoped = [{**p, "prompt": rescoped(p["prompt"], None)} for p in points]
    eligible = sorted({p["conversation_id"] for p in points})
    chosen = set(rng.sample(eligible, min(config.termination_conversations, len(eligible))))
    # The later subsets draw from their own seeded generators, so adding one changes no other.
    wanted = len(eligible) if config.end_probability_conversations is None else config.end_probability_conversations
    scored_for_end = set(random.Random(f"{config.seed}-end").sample(eligible, min(wanted, len(eligible))))
    # Obeys scope reads a conversation's first two points, as they are, under each stated length.
    kept_per_conversation = Counter(p["conversation_id"] for p in points)
    long_enough = sorted(c for c, n in kept_per_conversation.items() if n >= POINTS_READ)
    read_for_scope = set(
        random.Random(f"{config.seed}-scope").sample(long_enough, min(config.scope_conversations, len(long_enough)))
    )
    persona_users, persona_counts = (
        held_out_users(
            samples,
            users or {},
            count=config.persona_users,
            turns_per_user=config.persona_turns_per_user,
            # The prompt the model reads, never the turn it is scored on, decides what fits.
            fits=lambda prompt: sum(len(m["content"]) for m in prompt) <= config.max_sample_chars,
            persona_filter=config.persona_filter,
            seed=config.seed,
        )
        if config.persona_users
        else ([], {})
    )
    contrast_intents = list(dict.fromkeys(intent_of(s) for s in openings))[: config.contrast_intents]
    return EvalSubsets(
        perplexity=scored,
        first_turns=first_turns,
        termination_points=[p for p in unscoped if p["conversation_id"] in chosen],
        probe_openings=[s for s in first_turns if sample_chars(s) <= config.max_sample_chars][: config.probes_per_kind],
        diversity=first_turns[: config.diversity_intents],
        end_points=[p for p in unscoped if p["conversation_id"] in scored_for_end],
        scope_points=[p for p in points if p["conversation_id"] in read_for_scope and p["turn_index"] <= POINTS_READ],
        persona_users=persona_users,
        contrast_intents=contrast_intents,
        counts={
            "samples_longer_than_max_chars": len(samples) - len(fits),
            "decision_points_longer_than_max_chars": len(all_points) - len(points),
            "conversations_without_a_short_decision_point": len({p["conversation_id"] for p in all_points})
            - len(eligible),
            "termination_conversations": len(chosen),
            "end_probability_conversations": len(scored_for_end),
            "scope_conversations": len(read_for_scope),
            "distinct_intents_available": len(openings),
            **persona_counts,
        },
    )

"""Persona fidelity (docs/design.md#metrics; no peer measures it): given a held-out user's persona, does a
simulator write like that user?

Each held-out user's real turns (the test split's turns, grouped by `user_id`, in
conversation and turn order) are split into two interleaved halves. The reference half
(the 2nd, 4th, ... turn) is measured with prep's `measure_style` and rendered into the
persona block prep writes (`render_style`). At the scored half's points (the 1st, 3rd, ...
turn, at most `turns_per_user`), each checkpoint writes the user's turn with that persona
in its system message and the real history before it; its turns are measured the same
way and compared with the reference: the absolute error of each measure (words for
`words_per_turn`, percentage points for the rates) and bucket agreement, the share of
the six style buckets ("very_short", "often" lowercase, ...) that match. The real user's
own turns at the same points against the same reference are the ceiling: how well users
agree with themselves (split-half agreement).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Callable

from userlm.data_prep.format import END_MARKER, parse_system_text, system_text
from userlm.data_prep.personas import BUCKETS, matches, measure_style, parse_filter, render_style

STYLE_MEASURES = ("words_per_turn", "lowercase_start_rate", "punctuation_rate", "typo_rate", "question_rate", "politeness_rate")


@dataclass
class HeldOutUser:
    user: str
    reference: dict  # `measure_style` of the reference half
    prompts: list[list[dict]]  # flipped prompts at the scored points, the persona in the system message
    real_turns: list[str]  # what the real user wrote at those points


def with_persona(prompt: list[dict], persona: str) -> list[dict]:
    """The prompt with its system message's persona block replaced by `persona` (the intent kept);
    a prompt without a system message gets one holding the persona alone."""
    if prompt[0]["role"] != "system":
        return [{"role": "system", "content": persona}, *prompt]
    return [{"role": "system", "content": system_text(parse_system_text(prompt[0]["content"])[0], persona)}, *prompt[1:]]


def turns_by_user(samples: list[dict], users: dict[str, str]) -> dict[str, list[dict]]:
    """Each user's real turns (non-END samples) in conversation order, then turn order.

    The user is the sample's own `user_id`, else the one the conversations file gives,
    else the conversation stands in for its unknown user.
    """
    first_seen: dict[str, int] = {}
    grouped: dict[str, list[dict]] = {}
    for sample in samples:
        cid = sample["conversation_id"]
        first_seen.setdefault(cid, len(first_seen))
        if not sample["is_end"]:
            user = sample.get("user_id") or users.get(cid) or f"conversation:{cid}"
            grouped.setdefault(user, []).append(sample)
    for turns in grouped.values():
        turns.sort(key=lambda s: (first_seen[s["conversation_id"]], s["turn_index"]))
    return grouped


def held_out_users(samples: list[dict], users: dict[str, str], *, count: int, turns_per_user: int, fits: Callable[[dict], bool],
                   persona_filter: str | None, seed: int) -> tuple[list[HeldOutUser], dict]:
    """Up to `count` users drawn with `seed` among those with two turns or more, and what was left out.
    Scored points must `fits` (the sample-size limit); a user with none left is not eligible."""
    conditions = parse_filter(persona_filter) if persona_filter else []
    grouped = turns_by_user(samples, users)
    eligible, filtered_out = [], 0
    for user, turns in sorted(grouped.items()):
        scored = [s for s in turns[0::2][:turns_per_user] if fits(s)]
        if len(turns) < 2 or not scored:
            continue
        if conditions and not matches(measure_style([s["completion"][0]["content"] for s in turns]), conditions):
            filtered_out += 1
            continue
        eligible.append((user, turns, scored))
    chosen = random.Random(f"{seed}-personas").sample(eligible, min(count, len(eligible)))
    held_out = []
    for user, turns, scored in chosen:
        reference = measure_style([s["completion"][0]["content"] for s in turns[1::2]])
        persona = render_style(reference)
        held_out.append(HeldOutUser(
            user, reference, [with_persona(s["prompt"], persona) for s in scored], [s["completion"][0]["content"] for s in scored],
        ))
    counts = {"users": len(grouped), "users_eligible": len(eligible), "users_filtered_out": filtered_out, "users_drawn": len(held_out)}
    return held_out, counts


def style_agreement(turn_sets: list[list[str]], references: list[dict]) -> dict:
    """Bucket agreement (the value, in percent) and per-measure mean absolute error of each user's
    turns against their reference. END turns carry no style: they are left out and counted, and
    a user left with no turn is left out and counted."""
    errors: dict[str, list[float]] = {m: [] for m in STYLE_MEASURES}
    bucket_hits: dict[str, list[bool]] = {b: [] for b in BUCKETS}
    agreement, end_turns, without_turns = [], 0, 0
    for turns, reference in zip(turn_sets, references):
        spoken = [t for t in turns if t.strip() != END_MARKER]
        end_turns += len(turns) - len(spoken)
        if not spoken:
            without_turns += 1
            continue
        style = measure_style(spoken)
        for measure in STYLE_MEASURES:
            unit = 1 if measure == "words_per_turn" else 100  # rates in percentage points
            errors[measure].append(unit * abs(style[measure] - reference[measure]))
        hits = [style["buckets"][b] == reference["buckets"][b] for b in BUCKETS]
        for bucket, hit in zip(BUCKETS, hits):
            bucket_hits[bucket].append(hit)
        agreement.append(sum(hits) / len(hits))
    measured = bool(agreement)
    return {
        "value": 100 * statistics.fmean(agreement) if measured else None,
        "n": len(agreement),
        "errors": {m: statistics.fmean(v) if measured else None for m, v in errors.items()},
        "bucket_agreement": {b: 100 * statistics.fmean(v) if measured else None for b, v in bucket_hits.items()},
        "end_turns": end_turns,
        "users_without_turns": without_turns,
    }

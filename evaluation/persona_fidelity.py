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
own turns at the same points against the same reference are the human reference: how well
users agree with themselves (split-half agreement), not a ceiling (a model can exceed it).

Which users are drawn never depends on a scored turn: a persona filter reads the reference
half, and the sample-size limit reads the scored points' prompts (what the model is given),
not what the user wrote there. (With several scored turns a user, an earlier scored turn is
history in a later point's prompt; with one, as in the quickstart, nothing scored is read.)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from userlm.flipped.format import END_MARKER, parse_system_text, system_text
from userlm.flipped.style import BUCKETS, MEASURES, matches, measure_style, parse_filter, render_style

from .intervals import mean_figure

# The real users' own turns against their other half: a human reference, not a ceiling (a model can exceed it).
HUMAN_REFERENCE = "real users, split-half (human reference)"
# The style measures of a turn (a user's turn count says nothing of one turn's style).
STYLE_MEASURES = tuple(m for m in MEASURES if m != "turns")


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
    return [
        {"role": "system", "content": system_text(parse_system_text(prompt[0]["content"])[0], persona)},
        *prompt[1:],
    ]


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


def held_out_users(
    samples: list[dict],
    users: dict[str, str],
    *,
    count: int,
    turns_per_user: int,
    fits: Callable[[list[dict]], bool],
    persona_filter: str | None,
    seed: int,
) -> tuple[list[HeldOutUser], dict]:
    """Up to `count` users drawn with `seed` among those with two turns or more, and what was left out.
    The persona filter reads the reference half; scored points are kept where the prompt the model
    reads `fits` (the sample-size limit); a user with none kept is not eligible."""
    conditions = parse_filter(persona_filter) if persona_filter else []
    grouped = turns_by_user(samples, users)
    eligible, filtered_out = [], 0
    for user, turns in sorted(grouped.items()):
        if len(turns) < 2:
            continue
        reference = measure_style([s["completion"][0]["content"] for s in turns[1::2]])
        persona = render_style(reference)
        scored = [(with_persona(s["prompt"], persona), s) for s in turns[0::2][:turns_per_user]]
        scored = [(prompt, s) for prompt, s in scored if fits(prompt)]
        if not scored:
            continue
        if conditions and not matches(reference, conditions):
            filtered_out += 1
            continue
        eligible.append(
            HeldOutUser(user, reference, [p for p, _ in scored], [s["completion"][0]["content"] for _, s in scored])
        )
    held_out = random.Random(f"{seed}-personas").sample(eligible, min(count, len(eligible)))
    counts = {
        "users": len(grouped),
        "users_eligible": len(eligible),
        "users_filtered_out": filtered_out,
        "users_drawn": len(held_out),
    }
    return held_out, counts


def style_agreement(turn_sets: list[list[str]], references: list[dict], users: list[str], *, seed: int) -> dict:
    """Bucket agreement (the value, in percent) and per-measure mean absolute error of each user's
    turns against their reference, each a figure whose interval resamples users. END turns carry
    no style: they are left out and counted, and a user left with no turn is left out and counted."""
    errors: dict[str, list[float]] = {m: [] for m in STYLE_MEASURES}
    bucket_hits: dict[str, list[bool]] = {b: [] for b in BUCKETS}
    agreement, measured, end_turns, without_turns = [], [], 0, 0
    for turns, reference, user in zip(turn_sets, references, users):
        spoken = [t for t in turns if t.strip() != END_MARKER]
        end_turns += len(turns) - len(spoken)
        if not spoken:
            without_turns += 1
            continue
        measured.append(user)
        style = measure_style(spoken)
        for measure in STYLE_MEASURES:
            unit = 1 if measure == "words_per_turn" else 100  # rates in percentage points
            errors[measure].append(unit * abs(style[measure] - reference[measure]))
        hits = [style["buckets"][b] == reference["buckets"][b] for b in BUCKETS]
        for bucket, hit in zip(BUCKETS, hits):
            bucket_hits[bucket].append(hit)
        agreement.append(sum(hits) / len(hits))

    def per_user(values: list[float], scale: float = 1) -> dict:
        return mean_figure(values, seed=seed, ids=measured, unit="user", scale=scale)

    return {
        **per_user(agreement, 100),
        "errors": {m: per_user(v) for m, v in errors.items()},
        "bucket_agreement": {b: per_user(v, 100) for b, v in bucket_hits.items()},
        "end_turns": end_turns,
        "users_without_turns": without_turns,
    }

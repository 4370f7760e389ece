"""The persona contrast probe (docs/design.md#metrics): the same intents under two opposite personas must
come out measurably different in prep's style measures.

The two personas are written by prep's own `render_style` from opposite measured styles,
so a persona checkpoint sees exactly the kind of text it was trained on: a terse one
(very short, lowercase, no punctuation, never polite) and an elaborate one (long,
capitalised, punctuated, polite). Each intent's first turn is generated under both with
the same seed, so the persona is the only difference; the value is the elaborate turns'
words per turn minus the terse turns', the mean of the per-intent differences, whose
interval resamples intents. The turns are generated to their full length
(`contrast_max_new_tokens`): a cut elaborate turn would shrink the difference.
"""

from __future__ import annotations

from userlm.flipped.format import END_MARKER, system_text
from userlm.flipped.style import measure_style, render_style

from .intervals import mean_figure

TERSE = render_style(
    {
        "words_per_turn": 4,
        "buckets": {
            "length": "very_short",
            "lowercase": "often",
            "punctuation": "rare",
            "typos": "often",
            "questions": "rare",
            "politeness": "rare",
        },
    }
)
ELABORATE = render_style(
    {
        "words_per_turn": 80,
        "buckets": {
            "length": "long",
            "lowercase": "rare",
            "punctuation": "often",
            "typos": "rare",
            "questions": "sometimes",
            "politeness": "often",
        },
    }
)
# Which way each measure should move from the terse persona to the elaborate one.
EXPECTED_SIGN = {
    "words_per_turn": 1,
    "lowercase_start_rate": -1,
    "punctuation_rate": 1,
    "typo_rate": -1,
    "politeness_rate": 1,
}


def contrast_prompts(intents: list[str]) -> tuple[list[list[dict]], list[list[dict]]]:
    """First-turn prompts of every intent under the terse persona, and under the elaborate one."""
    return (
        [[{"role": "system", "content": system_text(intent, TERSE)}] for intent in intents],
        [[{"role": "system", "content": system_text(intent, ELABORATE)}] for intent in intents],
    )


def persona_contrast(terse_turns: list[str], elaborate_turns: list[str], intents: list[str], *, seed: int) -> dict:
    """Each measure under both personas, the difference (elaborate - terse) and whether it moved the
    expected way; intent by intent, how often the elaborate turn was the longer one. A pair with an
    END or an empty turn carries no style and is left out."""
    spoken = [
        (t, e, i)
        for t, e, i in zip(terse_turns, elaborate_turns, intents)
        if END_MARKER not in (t.strip(), e.strip()) and t.strip() and e.strip()
    ]
    differences = mean_figure(
        [len(e.split()) - len(t.split()) for t, e, _ in spoken], seed=seed, ids=[i for _, _, i in spoken], unit="intent"
    )
    if not spoken:
        return {**differences, "pairs_with_an_end": len(terse_turns)}
    terse = measure_style([t for t, _, _ in spoken])
    elaborate = measure_style([e for _, e, _ in spoken])
    measures = {}
    for measure, sign in EXPECTED_SIGN.items():
        difference = elaborate[measure] - terse[measure]
        measures[measure] = {
            "terse": terse[measure],
            "elaborate": elaborate[measure],
            "difference": difference,
            "expected": "+" if sign > 0 else "-",
            "as_expected": difference * sign > 0,
        }
    return {
        **differences,
        "pairs_with_an_end": len(terse_turns) - len(spoken),
        "measures": measures,
        "as_expected": sum(m["as_expected"] for m in measures.values()),
        "elaborate_longer": sum(len(e.split()) > len(t.split()) for t, e, _ in spoken),
        "examples": [{"terse": t, "elaborate": e} for t, e, _ in spoken[:2]],
    }

"""The naturalness detector against models writing as users (issue 22, item 4).

Telling users from assistants (naturalness.validate_detector) does not show that a detector
can tell a human user from a model asked to write as one, which is what the naturalness row
claims. So the detector also scores held-out real first turns against first turns that the
embedded SmolLM2 writes, prompted as a user through the flipped chatml template (the
prompted base of the quickstart), for held-out intents in each of SETTINGS: as the eval
prompts it, and told in its system message to write like a real chat user. The generations
are those of the eval's first-turn stage (unguarded, temperature 1, top-p 0.8, at most
`max_new_tokens` tokens), so the detector is checked in the regime it is used in. The figure
is the ROC AUC of the detector's human probability, real turns positive, each turn its own
resampling unit; below INFORMATIVE_AUC the report calls the naturalness row uninformative.
"""

from __future__ import annotations

import random

from userlm.flipped.format import END_MARKER

from .config import EvalConfig
from .intervals import figure, hanley_mcneil
from .scoring import generate_texts

# The embedded SmolLM2 as a prompted user (evaluation/config.py's NAME=PATH@TEMPLATE form).
PROMPTED_MODEL, PROMPTED_TEMPLATE = "default", "chatml"
CASUAL_USER = (
    "Write exactly as a real person types into a chat window: short, casual, no greeting, "
    "no sign-off, and never as the assistant."
)
SETTINGS = {
    "prompted base (the eval's prompt)": None,
    "prompted base told to write like a real chat user": CASUAL_USER,
}
INFORMATIVE_AUC = 0.8
SEED_OFFSET = 50_000  # the k-th turn of a setting is sampled with seed + SEED_OFFSET + k (beside scoring.py's bases)


def first_turns(samples: list[dict]) -> list[dict]:
    return [s for s in samples if s["turn_index"] == 0 and not s["is_end"] and s["prompt"][0]["role"] == "system"]


def setting_prompt(sample: dict, instruction: str | None) -> list[dict]:
    system = sample["prompt"][0]["content"]
    return [{"role": "system", "content": system if instruction is None else f"{instruction}\n\n{system}"}]


def detector_auc(detector, real: list[str], written: list[str], seed: int) -> dict:
    """ROC AUC of the human probability, real turns against model-written ones, with its bootstrap
    interval and Hanley-McNeil's beside it."""
    scores = detector(real + written)
    result = figure("auc", [[p, float(k < len(real))] for k, p in enumerate(scores)], seed=seed, unit="turn")
    if result["value"] is not None:
        result["ci_hanley_mcneil"] = hanley_mcneil(result["value"], len(real), len(written))
    return {**result, "real_user_turns": len(real), "model_turns": len(written)}


def model_written_validation(detector, held_out: list[dict], config: EvalConfig) -> dict:
    """The detector's AUC on held-out real first turns (up to `naturalness_fit_samples`) against the
    prompted SmolLM2's first turns for `naturalness_model_turns` of their intents in each setting."""
    from userlm.infer.simulator import UserSimulator

    candidates = first_turns(held_out)
    real = random.Random(f"{config.seed}-naturalness-models").sample(
        candidates, min(config.naturalness_fit_samples, len(candidates))
    )
    if not real or not config.naturalness_model_turns:
        return {"value": None, "n": 0, "ci": None, "informative": None}
    intents = real[: config.naturalness_model_turns]
    simulator = UserSimulator.load(PROMPTED_MODEL, template=PROMPTED_TEMPLATE)
    written = {}
    for name, instruction in SETTINGS.items():
        texts = generate_texts(
            simulator,
            [setting_prompt(s, instruction) for s in intents],
            config,
            seed=config.seed + SEED_OFFSET,
            desc=f"naturalness check: {name}",
        )
        written[name] = [t for t in texts if t != END_MARKER and t.strip()]
    real_texts = [s["completion"][0]["content"] for s in real]
    pooled = detector_auc(detector, real_texts, [t for texts in written.values() for t in texts], config.seed)
    informative = pooled["value"] is not None and pooled["value"] >= INFORMATIVE_AUC
    return {
        **pooled,
        "by_setting": {name: detector_auc(detector, real_texts, texts, config.seed) for name, texts in written.items()},
        "model": f"{PROMPTED_MODEL}@{PROMPTED_TEMPLATE} (the embedded SmolLM2 prompted as a user)",
        "seed_base": config.seed + SEED_OFFSET,
        "informative": informative,
        "verdict": (
            f"the detector tells real users from models writing as users (AUC at least {INFORMATIVE_AUC})"
            if informative
            else "uninformative: the detector cannot tell real users from models "
            f"writing as users (AUC below {INFORMATIVE_AUC}), "
            "so the naturalness row says little about a simulator"
        ),
        "examples": {name: texts[:2] for name, texts in written.items()},
    }

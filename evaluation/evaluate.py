"""`evaluate(config)`: the paper's metrics for any number of checkpoints on one held-out set.

Read top to bottom: read the flipped test samples (and who wrote them, for persona
fidelity), draw the evaluation subsets once (seeded, shared by every checkpoint), pick the
judge and the naturalness detector and validate both, measure the human reference on the
same subsets (intent decomposition's on the train split), score each checkpoint, then build
metrics.json, report.md and report.html in a folder beside `out`, swap it in whole, and print
the summary.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from userlm.atomic import replace_folder, staging_folder
from userlm.config import to_dict
from userlm.errors import UserError
from userlm.flipped.words import WORD_TOKENISATION
from userlm.hardware import resolve_bf16
from userlm.summary import print_summary

from .config import EvalConfig
from .end_reference import add_floor_differences, end_reference
from .human_train import train_intent_decomposition
from .judge import EndpointJudge, HeuristicJudge
from .judge_validation import judge_validation
from .naturalness import naturalness_setup
from .naturalness_validation import model_written_validation
from .published import PUBLISHED, SOURCE
from .report import eval_summary, write_report
from .scoring import human_reference, score_checkpoint, seeds_note
from .subsets import conversation_users, draw_subsets, read_samples


def evaluate(config: EvalConfig) -> dict:
    """Evaluate every checkpoint on the test data, write the report into `config.out`; return the metrics."""
    precision = resolve_bf16(config.bf16)
    print(f"userlm eval: teacher-forced passes in {precision.describe()}", file=sys.stderr)
    config = dataclasses.replace(config, bf16=precision.bf16)
    samples, bad_lines = read_samples(config.data)
    users = conversation_users(config.data) if config.persona_users else {}
    subsets = draw_subsets(samples, config, users)
    if len(subsets.first_turns) < 2:
        raise UserError("The test data has fewer than two distinct intents; give a larger test split.")
    judge = make_judge(config)
    naturalness = naturalness_setup(
        config.naturalness_detector,
        Path(config.data),
        samples,
        fit_samples=config.naturalness_fit_samples,
        seed=config.seed,
    )

    results = {
        "settings": settings(config, judge.label, naturalness.label),
        "data": {
            "samples": len(samples),
            "unusable_lines": len(bad_lines),
            "unusable_examples": bad_lines[:20],
            "users_known": bool(users),
            **subsets.counts,
        },
        "validation": {
            "naturalness_detector": {
                **naturalness.validation,
                "model_written": model_written_validation(naturalness.detector, naturalness.held_out, config),
            },
            "judge": judge_validation(
                judge, samples, conversations=config.judge_validation_conversations, seed=config.seed
            ),
        },
        "human": human_rows(subsets, naturalness.detector, config),
        # The floors a termination figure must beat with no model, learnt from the train split.
        "reference": end_reference(
            Path(config.data), subsets.end_points, sampled_points=subsets.termination_points, seed=config.seed
        ),
        "published": {"source": SOURCE, "figures": PUBLISHED},
        "checkpoints": {},
    }
    for spec in config.specs:
        results["checkpoints"][spec.name] = score_checkpoint(spec, subsets, judge, naturalness.detector, config)
        add_floor_differences(results["checkpoints"][spec.name], results["reference"], seed=config.seed)
    out = Path(config.out)
    staging = staging_folder(out)
    try:
        write_report(results, staging)
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the swap succeeded
    print_summary(eval_summary(results, out))
    from .card_results import add_card_results  # the figures into each evaluated checkpoint's model card (issue 27)

    add_card_results(results, out)
    return results


def human_rows(subsets, detector, config: EvalConfig) -> dict:
    """The human reference on the test subsets, but intent decomposition's on the train split: the
    heuristic intents were reworded against the test split's (human_train.py); none without a train split."""
    human = human_reference(subsets, detector, config.seed)
    del human["intent_decomposition"]
    train = train_intent_decomposition(Path(config.data), seed=config.seed)
    return human if train is None else {**human, "intent_decomposition": train}


def make_judge(config: EvalConfig):
    """The endpoint judge when one is configured, else the offline heuristic judge."""
    if not config.judge_endpoint:
        return HeuristicJudge()
    from userlm.endpoint import Endpoint

    return EndpointJudge(
        Endpoint(base_url=config.judge_endpoint, model=config.judge_model, api_key_env=config.judge_api_key_env)
    )


def settings(config: EvalConfig, judge_label: str, detector_label: str) -> dict:
    """What a reader needs to reproduce and read the numbers: the config, tokenisation, judge, detector, seeds."""
    return {
        **{k: v for k, v in to_dict(config).items() if k != "progress"},
        "word_tokenisation": WORD_TOKENISATION,
        "judge": judge_label,
        "naturalness_detector": detector_label,
        "generation": "unguarded sampling (UserSimulator.generate, guardrails=None), temperature 1.0, top_p 0.8",
        "end_probability": "P(end as the first token of the turn) = the "
        "probability of the turn's opening then the end marker "
        '(chatml: the marker after the open user header; userlm-llama3: P("\\n") x '
        'P(end | "\\n"); a vocabulary without the marker '
        "spells it in several tokens, whose product is tiny), read from one forward pass "
        "(shared by a conversation's points where their prompts are prefixes of each other), temperature 1, no top-p",
        "perplexity": "exp(mean NLL per scored token) over the target user turn and its "
        "end-of-turn token, the tokens training scores, "
        "in each checkpoint's own tokenizer (the end marker is one token where the "
        "vocabulary has it, several where it does not)",
        "teacher_forced_passes": "under bf16 autocast" if config.bf16 else "in each model's own dtype",
        "seeds": seeds_note(config.seed),
    }

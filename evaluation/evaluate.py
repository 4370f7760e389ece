"""`evaluate(config)`: the paper's metrics for any number of checkpoints on one held-out set.

Read top to bottom: read the flipped test samples, draw the evaluation subsets once
(seeded, shared by every checkpoint), pick the judge and the naturalness detector,
measure the human reference on the same subsets, score each checkpoint, then write
metrics.json, report.md and report.html and print the summary.
"""

from __future__ import annotations

from pathlib import Path

from userlm.config import to_dict
from userlm.data_prep.words import WORD_TOKENISATION
from userlm.errors import UserError
from userlm.summary import print_summary

from .config import EvalConfig
from .judge import EndpointJudge, HeuristicJudge
from .naturalness import naturalness_detector
from .published import PUBLISHED, SOURCE
from .report import eval_summary, write_report
from .scoring import human_reference, score_checkpoint, seeds_note
from .subsets import draw_subsets, read_samples


def evaluate(config: EvalConfig) -> dict:
    """Evaluate every checkpoint on the test data, write the report into `config.out`; return the metrics."""
    samples, bad_lines = read_samples(config.data)
    subsets = draw_subsets(samples, config)
    if len(subsets.first_turns) < 2:
        raise UserError("The test data has fewer than two distinct intents; give a larger test split.")
    judge = make_judge(config)
    detector, detector_label = naturalness_detector(config.naturalness_detector, samples, subsets.first_turns, config.seed)

    results = {
        "settings": settings(config, judge.label, detector_label),
        "data": {"samples": len(samples), "unusable_lines": len(bad_lines), "unusable_examples": bad_lines[:20], **subsets.counts},
        "human": human_reference(subsets, detector),
        "published": {"source": SOURCE, "figures": PUBLISHED},
        "checkpoints": {},
    }
    for spec in config.specs:
        results["checkpoints"][spec.name] = score_checkpoint(spec, subsets, judge, detector, config)
    out = Path(config.out)
    write_report(results, out)
    print_summary(eval_summary(results, out))
    return results


def make_judge(config: EvalConfig):
    """The endpoint judge when one is configured, else the offline heuristic judge."""
    if not config.judge_endpoint:
        return HeuristicJudge()
    from userlm.endpoint import Endpoint

    return EndpointJudge(Endpoint(base_url=config.judge_endpoint, model=config.judge_model, api_key_env=config.judge_api_key_env))


def settings(config: EvalConfig, judge_label: str, detector_label: str) -> dict:
    """What a reader needs to reproduce and read the numbers: the config, tokenisation, judge, detector, seeds."""
    return {
        **{k: v for k, v in to_dict(config).items() if k != "progress"},
        "word_tokenisation": WORD_TOKENISATION,
        "judge": judge_label,
        "naturalness_detector": detector_label,
        "generation": "unguarded sampling (UserSimulator.generate, guardrails=None), temperature 1.0, top_p 0.8",
        "perplexity": "exp(mean NLL per scored token) over the target user turn and its end-of-turn token, the tokens training scores, "
        "in each checkpoint's own tokenizer (the end marker is one token where the vocabulary has it, several where it does not)",
        "seeds": seeds_note(config.seed),
    }

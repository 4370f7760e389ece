"""`userlm eval`: a thin shell over `userlm.evaluation.evaluate.evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from userlm.data_prep.templates import TEMPLATES

from .evaluate import EvalConfig, evaluate, parse_checkpoint


def add_parser(subparsers) -> None:
    defaults = EvalConfig()
    parser = subparsers.add_parser(
        "eval",
        help="Evaluate simulator checkpoints side by side with the paper's metrics.",
        description=(
            "Evaluate simulator checkpoints on a held-out flipped test set and write metrics.json, "
            "report.md and report.html. A checkpoint is NAME=PATH (a `userlm train` output, which carries "
            f"its flipped template) or NAME=PATH@TEMPLATE ({', '.join(TEMPLATES)}) for an ordinary instruct "
            "model prompted through that flipped template, e.g. base=default@chatml."
        ),
    )
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH[@TEMPLATE]", help="a checkpoint to evaluate; repeat for several")
    parser.add_argument("--data", type=Path, required=True, help="flipped test samples (the test.jsonl `userlm prep` writes)")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json, report.md and report.html")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--perplexity-samples", type=int, default=defaults.perplexity_samples)
    parser.add_argument("--max-sample-chars", type=int, default=defaults.max_sample_chars)
    parser.add_argument("--first-turn-intents", type=int, default=defaults.first_turn_intents)
    parser.add_argument("--termination-conversations", type=int, default=defaults.termination_conversations)
    parser.add_argument("--probes-per-kind", type=int, default=defaults.probes_per_kind)
    parser.add_argument("--diversity-intents", type=int, default=defaults.diversity_intents)
    parser.add_argument("--simulations-per-intent", type=int, default=defaults.simulations_per_intent)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--judge-endpoint", help="base URL (…/v1) of an OpenAI-compatible chat endpoint to judge the adherence probes; without it an offline heuristic judge is used")
    parser.add_argument("--judge-model", help="model name at the judge endpoint")
    parser.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge's API key")
    parser.add_argument("--naturalness-detector", metavar="MODULE:FUNCTION", help="a callable texts -> human probabilities; without it an offline stylometric baseline is used")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from userlm.errors import UserError

    judge = None
    if args.judge_endpoint:
        if not args.judge_model:
            raise UserError("Name the judge's model with --judge-model when you give --judge-endpoint.")
        from userlm.endpoint import Endpoint

        judge = Endpoint(base_url=args.judge_endpoint, model=args.judge_model, api_key_env=args.judge_api_key_env)
    config = EvalConfig(
        seed=args.seed,
        perplexity_samples=args.perplexity_samples,
        max_sample_chars=args.max_sample_chars,
        first_turn_intents=args.first_turn_intents,
        termination_conversations=args.termination_conversations,
        probes_per_kind=args.probes_per_kind,
        diversity_intents=args.diversity_intents,
        simulations_per_intent=args.simulations_per_intent,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        judge=judge,
        naturalness_detector=args.naturalness_detector,
    )
    evaluate([parse_checkpoint(c) for c in args.checkpoint], args.data, args.out, config)
    return 0

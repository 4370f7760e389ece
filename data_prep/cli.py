"""`userlm prep`: a thin shell over `pipeline.prep`."""

from __future__ import annotations

import argparse
from pathlib import Path

from userlm.errors import UserError

from .formats import FORMATS
from .intents import INTENT_SOURCES
from .pipeline import PERSONA_SOURCES, PrepConfig, PrepResult, prep


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prep",
        help="turn conversation logs into flipped, intent-conditioned datasets",
        description="Read chat logs (ShareGPT, WildChat, LMSYS-Chat-1M, OpenAI messages), clean, filter, "
        "deduplicate, add intents (and personas), split by user and write flipped samples.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="JSON, JSONL, JSONL.gz, Parquet files or datasets folders")
    parser.add_argument("--out", type=Path, default=Path("out/prep"), help="output folder (default: out/prep)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="the log schema (default: detect per file)")
    parser.add_argument(
        "--languages", default="en", help="comma-separated ISO codes to keep, or 'any' (default: en)"
    )
    parser.add_argument("--keep-toxic", action="store_true", help="keep records the source flagged as toxic")
    parser.add_argument("--min-user-turns", type=int, default=1)
    parser.add_argument("--max-user-turns", type=int, default=None)
    parser.add_argument("--min-chars", type=int, default=1, help="minimum characters of a conversation")
    parser.add_argument("--max-chars", type=int, default=None, help="maximum characters of a conversation")
    parser.add_argument("--no-exact-dedup", action="store_true", help="keep exact duplicates of the user text")
    parser.add_argument(
        "--near-dup-threshold", type=float, default=0.9, help="MinHash Jaccard threshold; 0 turns it off (default 0.9)"
    )
    parser.add_argument("--split", default="0.9,0.05,0.05", help="train,validation,test shares (default 0.9,0.05,0.05)")
    parser.add_argument("--intents", choices=INTENT_SOURCES, default="heuristic")
    parser.add_argument("--intent-column", default=None, help="the field holding intents, for --intents column")
    parser.add_argument("--intent-endpoint", default=None, help="OpenAI-compatible base URL, for --intents llm")
    parser.add_argument("--intent-model", default=None, help="model name at the endpoint, for --intents llm")
    parser.add_argument("--personas", choices=PERSONA_SOURCES, default="none")
    parser.add_argument("--persona-column", default=None, help="the field holding personas, for --personas column")
    parser.add_argument("--persona-filter", default=None, help="keep only records whose persona matches EXPR")
    parser.add_argument("--persona-endpoint", default=None, help="for --personas llm (default: the intent endpoint)")
    parser.add_argument("--persona-model", default=None, help="for --personas llm (default: the intent model)")
    parser.add_argument("--endpoint-timeout", type=float, default=60.0, help="seconds per endpoint request (default 60)")
    parser.add_argument("--endpoint-concurrency", type=int, default=8, help="endpoint requests in flight (default 8)")
    parser.add_argument("--no-hf", action="store_true", help="do not save OUT/hf/ (a datasets DatasetDict)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def parse_shares(text: str) -> tuple[float, float, float]:
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--split {text!r} must be three numbers such as 0.9,0.05,0.05.") from None
    if len(shares) != 3:
        raise UserError(f"--split {text!r} must be three numbers such as 0.9,0.05,0.05.")
    return shares


def config_from_args(args: argparse.Namespace) -> PrepConfig:
    languages = None if args.languages.strip().lower() in ("any", "all", "") else tuple(
        code.strip() for code in args.languages.split(",") if code.strip()
    )
    return PrepConfig(
        inputs=list(args.inputs),
        out_dir=args.out,
        format=args.format,
        languages=languages,
        drop_toxic=not args.keep_toxic,
        min_user_turns=args.min_user_turns,
        max_user_turns=args.max_user_turns,
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        exact_dedup=not args.no_exact_dedup,
        near_dup_threshold=args.near_dup_threshold or None,
        split_shares=parse_shares(args.split),
        intents=args.intents,
        intent_column=args.intent_column,
        intent_endpoint=args.intent_endpoint,
        intent_model=args.intent_model,
        personas=args.personas,
        persona_column=args.persona_column,
        persona_filter=args.persona_filter,
        persona_endpoint=args.persona_endpoint,
        persona_model=args.persona_model,
        endpoint_timeout=args.endpoint_timeout,
        endpoint_concurrency=args.endpoint_concurrency,
        hf=not args.no_hf,
        progress=not args.no_progress,
    )


def print_summary(result: PrepResult) -> None:
    from rich.console import Console
    from rich.table import Table

    stats = result.stats
    table = Table(title=f"userlm prep: {stats['read']} records read in {stats['seconds']} s")
    table.add_column("outcome")
    table.add_column("reason / filter / split")
    table.add_column("count", justify="right")
    for reason, count in sorted(stats["rejected"].items()):
        table.add_row("rejected", reason, str(count))
    for name, count in stats["filtered"].items():
        table.add_row("filtered", name, str(count))
    for split, counts in stats["splits"].items():
        table.add_row(
            "kept", split, f"{counts['conversations']} conversations, {counts['samples']} samples"
        )
    table.add_row("kept", "total", str(stats["kept"]), end_section=True)
    console = Console()
    console.print(table)
    for name, path in result.written.items():
        console.print(f"  {name:<14} {path}", highlight=False)


def run(args: argparse.Namespace) -> int:
    result = prep(config_from_args(args))
    print_summary(result)
    return 0

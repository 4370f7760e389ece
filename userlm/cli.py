"""The `userlm` console script: one subcommand per stage, each a thin shell over a function."""

from __future__ import annotations

import argparse
import sys

from userlm import __version__
from userlm.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    # Stage modules are imported here, not at module level, so `userlm --help` stays fast.
    from userlm import quickstart
    from userlm.data_prep import cli as prep_cli
    from userlm.evaluation import cli as eval_cli
    from userlm.infer import cli as infer_cli
    from userlm.train import cli as train_cli

    parser = argparse.ArgumentParser(prog="userlm", description="Build, train, run and evaluate user simulators.")
    parser.add_argument("--version", action="version", version=f"userlm-kit {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (prep_cli, train_cli, eval_cli, infer_cli, quickstart):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"userlm {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"userlm {args.command}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

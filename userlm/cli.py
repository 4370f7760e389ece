"""The `userlm` console script: one subcommand per stage, each a thin shell over a function.

Every subcommand reads its stage's config dataclass from a YAML file, key=value words and
--flags (`userlm.config.parse_config`); `userlm COMMAND --help` lists its keys.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from userlm import __version__
from userlm.errors import UserError

# command -> (module:function taking the command's words and returning an exit code, one line of help)
COMMANDS = {
    "prep": ("userlm.data_prep.cli:main", "turn conversation logs into flipped, intent-conditioned datasets"),
    "train": ("userlm.train.cli:train_main", "fine-tune a user simulator from a YAML recipe"),
    "merge": ("userlm.train.cli:merge_main", "merge a LoRA/QLoRA adapter into its unquantised base"),
    "simulate": ("userlm.infer.cli:simulate_main", "simulate conversations between a user simulator and an assistant"),
    "chat": ("userlm.infer.cli:chat_main", "chat with a user simulator: you play the assistant"),
    "synth": ("userlm.infer.synth.run:main", "simulate, filter and export conversations to train an assistant"),
    "serve": ("userlm.infer.serve.server:main", "serve a user simulator as an OpenAI-compatible HTTP server"),
    "test": (
        "userlm.infer.suite.run:main",
        "run a suite of simulated users against an assistant, with a pass/fail gate",
    ),
    "eval": ("userlm.evaluation.cli:main", "evaluate simulator checkpoints side by side with the paper's metrics"),
    "extrinsic": ("userlm.evaluation.extrinsic.run:main", "check an assistant on tasks under each user simulator"),
    "calibrate": ("userlm.evaluation.calibration:main", "fit when a simulator leaves to the real per-turn rates"),
    "quickstart": ("userlm.quickstart:main", "run the whole pipeline on the embedded default on a CPU"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: userlm COMMAND [CONFIG.yaml] [key=value ...] [--key value ...]",
        "",
        "Build, train, run and evaluate user simulators.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`userlm COMMAND --help` lists a command's keys."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"userlm-kit {__version__}")
        return 0
    command, words = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"userlm: unknown command {command!r}; use one of {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    target, _ = COMMANDS[command]
    module_name, function_name = target.split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        return function(words) or 0
    except UserError as error:
        print(f"userlm {command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"userlm {command}: interrupted.", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not a user's mistake: one line here, the traceback in a log
        log = write_crash_log(command, argv)
        print(
            f"userlm {command}: unexpected error ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); "
            f"the traceback is in {log}. Please report it with that file.",
            file=sys.stderr,
        )
        return 1


def write_crash_log(command: str, argv: list[str]) -> Path:
    """The current exception's traceback, with the command line, in a new file under the cache folder."""
    import time
    import traceback

    from userlm.atomic import atomic_write
    from userlm.defaults import cache_dir

    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"userlm-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    atomic_write(path, f"userlm {' '.join(argv)}\nuserlm-kit {__version__}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())

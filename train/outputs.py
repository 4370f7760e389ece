"""Whether a `userlm train` output folder is finished (issue 11): the marker readers check.

`userlm train` writes `train_incomplete.json` into its output_dir before its first step
and removes it only after the final model and `train_summary.json` are written. A folder
that holds the marker is a run that was interrupted (or is still going): its top-level
weights are missing, or are an older run's, and simulate, chat, serve and eval refuse it
with `unfinished_run_message`. Its `checkpoint-N` folders stay usable for resuming.

No heavy imports here: loaders of every stage call this before loading anything.
"""

from __future__ import annotations

import time
from pathlib import Path

INCOMPLETE_MARKER = "train_incomplete.json"
SUMMARY_FILE = "train_summary.json"


def unfinished_run_message(folder: str | Path) -> str | None:
    """One sentence if `folder` is a `userlm train` output that did not finish, else None."""
    folder = Path(folder)
    if not (folder / INCOMPLETE_MARKER).is_file():
        return None
    return (
        f"{folder} is the output of a `userlm train` run that did not finish ({INCOMPLETE_MARKER} is still there); "
        "run the same recipe again with resume_from_checkpoint=auto to finish it, or point at a finished run."
    )


def mark_started(output_dir: Path) -> None:
    """Before the first step: the folder is not a finished run until `mark_finished`."""
    from userlm.atomic import write_json

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        output_dir / INCOMPLETE_MARKER,
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "note": "userlm train is writing this folder; it is finished when this "
            f"file is gone and {SUMMARY_FILE} is written.",
        },
    )


def mark_finished(output_dir: Path, summary: dict) -> None:
    """After the final model: the summary, then the marker removed (each durable, in that order)."""
    from userlm.atomic import fsync_folder, write_json

    write_json(output_dir / SUMMARY_FILE, portable(summary, output_dir))
    (output_dir / INCOMPLETE_MARKER).unlink(missing_ok=True)
    fsync_folder(output_dir)  # the removal itself survives a crash


def portable(summary: dict, output_dir: Path) -> dict:
    """The summary as the folder keeps it: no path outside the folder (a copy of it is still true)."""

    def named(path: str | None) -> str | None:
        if path is None:
            return None
        path, folder = Path(path).resolve(), output_dir.resolve()
        return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name

    return {
        **summary,
        "output_dir": ".",
        "init_adapter": named(summary.get("init_adapter")),
        "resumed_from": named(summary.get("resumed_from")),
    }


def portable_training_args(output_dir: Path) -> None:
    """Rewrite each training_args.bin under output_dir (the trainer pickles its settings there, the folder's
    absolute path included) with its paths named inside the folder, as `portable` does for the summary."""
    import copy

    import torch

    from userlm.atomic import atomic_open

    for path in Path(output_dir).rglob("training_args.bin"):
        args = copy.copy(torch.load(path, weights_only=False))  # our own pickle, written by this run's trainer
        folder = path.parent.resolve()
        for key in ("output_dir", "logging_dir", "deepspeed"):
            value = getattr(args, key, None)
            if isinstance(value, str) and Path(value).is_absolute():
                value = Path(value).resolve()
                setattr(args, key, value.relative_to(folder).as_posix() if value.is_relative_to(folder) else value.name)
        with atomic_open(path, "wb") as handle:
            torch.save(args, handle)

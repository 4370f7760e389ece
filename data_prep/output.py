"""The prep output folder: what may be written over, how a run starts or resumes, and the
swap that puts a finished output in place whole (docs/design.md#durability, issue 11).

Prep builds its output in its work folder (`work.py`) beside OUT and swaps it in whole
(`userlm.atomic.replace_folder`, one rename): readers see the previous complete output or
the new one, never a mix. OUT is only ever replaced when it is missing, empty or a prep
output (it has prep's `stats.json`); prep never writes over its own inputs.

Resuming: the work folder's `plan.json` says what the run is (options and inputs, by size
and modification time). The same command finds it and resumes; another command starts
over (the LLM answer caches are kept: their keys are the exact requests, so they stay
right whatever changed). A run killed between finishing and swapping is swapped on the
next run, and one killed just after swapping is recognised by the inode it swapped in.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

from userlm.atomic import replace_folder, write_json
from userlm.config import to_dict
from userlm.errors import UserError

from .work import Work

CACHES = ("intent_cache.sqlite", "persona_cache.sqlite")
# Options that change how a run goes, not what it writes: a resume may change them.
RUN_ONLY_OPTIONS = ("progress", "num_proc")


def is_prep_output(folder: Path) -> bool:
    try:
        stats = json.loads((folder / "stats.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stats, dict) and {"read", "kept", "splits"} <= set(stats)


def check_out(config) -> None:
    """Stop, with one sentence, before writing anywhere prep must not."""
    out = Path(config.out).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {config.out} is a file; give a folder (prep writes several files there).")
    for path in config.inputs:
        path = Path(path).resolve()
        if path == out or out in path.parents:
            raise UserError(
                f"The input {path} is inside the output folder {out}, which "
                "prep replaces as a whole; pass another --out."
            )
    if out.is_dir() and not is_prep_output(out):
        found = sorted(entry.name for entry in out.iterdir())
        if found:
            raise UserError(
                f"{out} holds files that `userlm prep` did not write (e.g. "
                f"{found[0]}); prep replaces its output folder "
                "as a whole, so pass a new or empty folder as --out."
            )


def plan_of(config) -> dict:
    options = {key: value for key, value in to_dict(config).items() if key not in RUN_ONLY_OPTIONS}
    inputs = []
    for path in config.inputs:
        stat = Path(path).stat()
        inputs.append({"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    plan = {"options": options, "inputs": inputs}
    plan["id"] = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return plan


class Run:
    """The work folder of this run, locked while it is in use."""

    def __init__(self, config):
        self.out = Path(config.out).resolve()
        self.work = Work(self.out)
        try:
            self.work.root.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.work.root / "lock", "w")
        except OSError as error:
            raise UserError(
                f"Cannot write beside {self.out} ({error.strerror}); pass an --out in a folder you can write to."
            ) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UserError(
                f"Another `userlm prep` is writing {self.out} (its work folder {self.work.root} is locked); "
                "wait for it to finish or pass another --out."
            ) from None
        self.plan = plan_of(config)

    def start(self) -> str:
        """ "fresh", "resumed" or "finished" (an earlier run of this command already wrote OUT)."""
        root = self.work.root
        previous = self._read(root / "plan.json")
        ready = self._read(root / "ready.json")
        same = previous is not None and previous["id"] == self.plan["id"]
        if ready is not None and same:
            if self._swapped(ready):
                return "finished"
            return "resumed"
        if same:
            return "resumed"
        self._start_over()
        return "fresh"

    def save_plan(self) -> None:
        write_json(self.work.root / "plan.json", self.plan)

    def _swapped(self, ready: dict) -> bool:
        try:
            return self.out.stat().st_ino == ready["inode"]
        except OSError:
            return False

    def _start_over(self) -> None:
        """Empty the work folder but for the LLM caches, and seed those from a finished OUT."""
        root = self.work.root
        (root / "plan.json").unlink(missing_ok=True)  # first: a kill from here on starts over again
        (root / "ready.json").unlink(missing_ok=True)
        for entry in root.iterdir():
            if entry.name in ("lock", "out"):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        staged = self.work.staged
        staged.mkdir(exist_ok=True)
        for entry in staged.iterdir():
            if not entry.name.startswith(CACHES):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if is_prep_output(self.out):
            for name in CACHES:
                if (self.out / name).exists() and not (staged / name).exists():
                    for suffix in ("", "-wal"):
                        if (self.out / f"{name}{suffix}").exists():
                            shutil.copy2(self.out / f"{name}{suffix}", staged / f"{name}{suffix}")

    def swap_in(self) -> None:
        """Put the finished output at OUT (replacing what was there whole), then clean up."""
        staged = self.work.staged
        if not self._read(self.work.root / "ready.json"):
            write_json(self.work.root / "ready.json", {"inode": staged.stat().st_ino})
        if self._swapped(self._read(self.work.root / "ready.json")):
            return
        replace_folder(staged, self.out)

    def clean_up(self) -> None:
        shutil.rmtree(self.work.root, ignore_errors=True)
        self._lock.close()

    def release(self) -> None:
        """Stop using the work folder, keeping it (a failed run resumes from it)."""
        self._lock.close()

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

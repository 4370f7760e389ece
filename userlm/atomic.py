"""Durable, atomic writes: the one way every stage puts a file or a folder in place (docs/design.md#durability).

A file is written under a temporary name in its folder, flushed and fsynced, renamed over
the final name, and the folder is fsynced so the rename itself survives a crash. Readers
see the old file or the new one, never a part of either.

A folder (a merged model, prep's output) is built beside its final place and swapped in
with `replace_folder`. On Linux the swap is one `renameat2(RENAME_EXCHANGE)` call, so
there is no moment without a folder at the final name; elsewhere the old folder is moved
aside and the new one renamed in, two renames apart.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

RENAME_EXCHANGE = 2  # from <linux/fs.h>
AT_FDCWD = -100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def share_files(folder: str | Path) -> None:
    """Give every file under `folder` the mode the umask gives a new file (0644 under 022), and
    `folder` and the folders in it the mode it gives a new folder (0755).

    Writers that go through a private temporary file leave theirs 0600: safetensors 0.8's
    `save_file`, which transformers and PEFT save weights with; `tempfile.mkdtemp` makes 0700 folders.
    """
    mode, folder_mode = 0o666 & ~_umask(), 0o777 & ~_umask()
    for root, _, files in os.walk(folder):
        if Path(root).stat().st_mode & 0o777 != folder_mode:
            os.chmod(root, folder_mode)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open a folder; the rename is still atomic
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open a temporary file beside `path`; on a clean exit it is fsynced and renamed to `path`."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; an output is an ordinary file
    try:
        with os.fdopen(handle, mode, encoding=None if "b" in mode else encoding) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as stream:
        stream.write(data)


def write_json(path: str | Path, value) -> None:
    atomic_write(path, json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """One JSON object per line; returns how many were written."""
    count = 0
    with atomic_open(path) as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False, default=str))
            stream.write("\n")
            count += 1
    return count


def staging_folder(final: str | Path) -> Path:
    """An empty folder beside `final` to build it in (same file system, so the swap is a rename)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building-"))
    os.chmod(folder, 0o777 & ~_umask())  # mkdtemp makes it private; an output is an ordinary folder
    return folder


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one system call (Linux renameat2); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return result == 0


def replace_folder(staging: str | Path, final: str | Path) -> Path:
    """Put the finished folder `staging` at `final`, replacing what was there as a whole."""
    staging, final = Path(staging), Path(final)
    for root, _, files in os.walk(staging):
        for name in files:
            with open(Path(root) / name, "rb") as stream:
                os.fsync(stream.fileno())
        fsync_folder(Path(root))
    if not final.exists():
        os.replace(staging, final)
    elif _exchange(staging, final):
        shutil.rmtree(staging)  # `staging` now holds the old folder
    else:
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    fsync_folder(final.parent)
    return final

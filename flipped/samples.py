"""Where flipped samples live: the one place that knows the files `userlm prep` writes.

Prep writes each split as JSON Lines, `OUT/<split>.jsonl` or gzip-compressed
`OUT/<split>.jsonl.gz`, and may add `OUT/hf/`, the same splits as a `datasets`
DatasetDict; the kept conversation records (docs/design.md#conversation-records) are `OUT/conversations.jsonl`
(or `.jsonl.gz`). Training, evaluation and the quickstart find and open samples and
conversations through this module, so the layout can change in one place.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from userlm.errors import UserError

from .records import ConversationRecord

SPLITS = ("train", "validation", "test")
SAMPLE_SUFFIXES = (".jsonl.gz", ".jsonl")
CONVERSATIONS = "conversations"


def split_files(folder: str | Path) -> dict[str, Path]:
    """The sample file of each split found in a prep output folder (compressed first)."""
    found = {}
    for split in SPLITS:
        for suffix in SAMPLE_SUFFIXES:
            path = Path(folder) / f"{split}{suffix}"
            if path.is_file():
                found[split] = path
                break
    return found


def split_file(folder: str | Path, split: str) -> Path:
    """One split's sample file, e.g. the test split for evaluation."""
    path = split_files(folder).get(split)
    if path is None:
        raise UserError(
            f"{folder} holds no {split} samples ({split}.jsonl or {split}.jsonl.gz); point at `userlm prep` output."
        )
    return path


def open_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a JSON Lines file, gzip-compressed or not."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as lines:
        yield from enumerate(lines, 1)


def conversations_file(folder: str | Path) -> Path:
    """The kept conversation records of a prep output folder."""
    for suffix in SAMPLE_SUFFIXES:
        path = Path(folder) / f"{CONVERSATIONS}{suffix}"
        if path.is_file():
            return path
    raise UserError(f"{folder} holds no conversations.jsonl; point at a `userlm prep` output folder.")


def iter_conversations(folder: str | Path) -> Iterator[ConversationRecord]:
    """The kept conversation records (docs/design.md#conversation-records) of a prep output folder, in file order.

    Each has `messages` (the user's turns are the `user` ones), `user_id`, `intent`,
    `persona`, `persona_attrs` and `meta["split"]`, e.g. the held-out users' turns:

        held_out = [r for r in iter_conversations("out/prep") if r["meta"]["split"] == "test"]
    """
    for _, line in open_lines(conversations_file(folder)):
        if line.strip():
            yield json.loads(line)


def load_samples(path: str | Path):
    """The flipped samples at `path` (a prep folder, a DatasetDict folder, or one JSONL/JSONL.gz
    file) as a `datasets.DatasetDict` with at least a `train` split."""
    from datasets import DatasetDict, load_from_disk

    path = Path(path)
    if not path.exists():
        raise UserError(f"Dataset {path} does not exist; run `userlm prep` first and pass its output folder.")
    if path.is_file():
        return DatasetDict({"train": _read_json_lines(path)})
    saved = datasets_folder(path)
    if saved is not None:
        return load_from_disk(str(saved))
    found = split_files(path)
    if "train" not in found:
        raise UserError(
            f"{path} holds no flipped samples (no hf/ folder, no train.jsonl); "
            "point dataset_path at `userlm prep` output."
        )
    # A split no user fell into is an empty file, which `datasets` cannot load: it is left out.
    return DatasetDict({split: _read_json_lines(file) for split, file in found.items() if has_lines(file)})


def datasets_folder(path: Path) -> Path | None:
    """The `datasets` DatasetDict saved in a prep folder (`OUT/hf/`, written with --hf) or at `path` itself."""
    for folder in (path / "hf", path):
        if (folder / "dataset_dict.json").exists():
            return folder
    return None


def has_lines(path: Path) -> bool:
    return any(line.strip() for _, line in open_lines(path))


def _read_json_lines(path: Path):
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(path), split="train")
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise UserError(
            f"{path} is not a file of flipped samples (no "
            f"{', '.join(sorted(missing))} field); write it with `userlm prep`."
        )
    return dataset

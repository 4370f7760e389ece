"""How prep stores flipped samples: gzip-compressed JSON Lines in TRL's prompt-completion shape.

A conversation with K user turns repeats its history in K+1 prompts, so the samples are
about twice the size of the conversations; gzip at its fastest level stores them at about
a third of the conversations' size, since every repeat falls in its window. Each chunk
writes one complete gzip member per split and the members are concatenated, which is
itself a valid gzip file (Python's gzip, `datasets.load_dataset("json", ...)`, zcat).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from .split import SPLITS

SAMPLE_KEYS = {"prompt", "completion", "conversation_id", "turn_index", "is_end", "split"}
GZIP_LEVEL = 1  # level 6 is 3x slower for 20% less; the samples are written once and read a few times


class SampleEncoder:
    """json.dumps of a flipped sample, encoding each message once per conversation.

    A conversation with K user turns repeats its history in K+1 prompts; encoding every
    message again would make writing quadratic in JSON work. The output is the same text
    json.dumps gives.
    """

    def __init__(self) -> None:
        self.messages: dict[tuple[str, str], str] = {}

    def message(self, message: dict) -> str:
        key = (message["role"], message["content"])
        encoded = self.messages.get(key)
        if encoded is None:
            encoded = self.messages[key] = json.dumps(message, ensure_ascii=False)
        return encoded

    def __call__(self, sample: dict) -> str:
        if sample.keys() != SAMPLE_KEYS:
            raise ValueError(f"SampleEncoder knows the sample keys {sorted(SAMPLE_KEYS)}, got {sorted(sample)}")
        prompt = ", ".join(self.message(m) for m in sample["prompt"])
        completion = ", ".join(self.message(m) for m in sample["completion"])
        return (
            f'{{"prompt": [{prompt}], "completion": [{completion}], '
            f'"conversation_id": {json.dumps(sample["conversation_id"], ensure_ascii=False)}, '
            f'"turn_index": {sample["turn_index"]}, "is_end": {json.dumps(sample["is_end"])}, '
            f'"split": {json.dumps(sample["split"])}}}'
        )


class GzipMember:
    """Text lines compressed into one gzip member in memory (no name, no time stamp in its
    header, so the same lines always give the same bytes)."""

    def __init__(self) -> None:
        self.compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self.parts: list[bytes] = []

    def write(self, text: str) -> None:
        self.parts.append(self.compressor.compress(text.encode("utf-8")))

    def finish(self) -> bytes:
        self.parts.append(self.compressor.flush())
        return b"".join(self.parts)


def sample_features():
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features(
        {
            "prompt": List(message),
            "completion": List(message),
            "conversation_id": Value("string"),
            "turn_index": Value("int64"),
            "is_end": Value("bool"),
            "split": Value("string"),
        }
    )


def save_hf(files: dict[str, Path], samples: dict[str, int], folder: Path, cache: Path) -> None:
    """The sample splits as a DatasetDict saved at `folder`, read with `datasets`' own JSON
    loader, which converts a block at a time (memory does not grow with the corpus)."""
    from datasets import Dataset, DatasetDict, load_dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    features = sample_features()
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        parts = {}
        for split in SPLITS:
            if not samples[split]:
                parts[split] = Dataset.from_dict({name: [] for name in features}, features=features)
            else:
                parts[split] = load_dataset(
                    "json", data_files=str(files[split]), features=features, split="train", cache_dir=str(cache)
                )
        # One shard each: an empty split saved with none cannot be loaded back.
        DatasetDict(parts).save_to_disk(str(folder), num_shards={split: 1 for split in SPLITS})
    finally:
        if not was_disabled:
            enable_progress_bars()

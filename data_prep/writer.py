"""Writing prep's flipped samples: `OUT/<split>.jsonl` and the `OUT/hf/` DatasetDict.

Every file and the `hf/` folder go through `userlm.atomic`, so a killed run never leaves a
half-written file or folder under a final name.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from userlm.atomic import atomic_open, replace_folder, staging_folder
from userlm.data_prep.format import flip

from .split import SPLITS


SAMPLE_KEYS = {"prompt", "completion", "conversation_id", "turn_index", "is_end", "split"}


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


def write_samples(out: Path, records_by_split: dict[str, list[dict]], *, progress: bool = False) -> dict[str, dict]:
    """Flip every conversation into `OUT/<split>.jsonl`; counts per split."""
    from tqdm.auto import tqdm

    counts = {}
    total = sum(len(records) for records in records_by_split.values())
    with tqdm(total=total, desc="writing samples", unit="conv", disable=not progress) as bar:
        for split in SPLITS:
            samples = ends = longest = 0
            with atomic_open(out / f"{split}.jsonl") as stream:
                for record in records_by_split[split]:
                    encode = SampleEncoder()
                    for sample in flip(record, split):
                        line = encode(sample)
                        longest = max(longest, len(line))
                        stream.write(line)
                        stream.write("\n")
                        samples += 1
                        ends += sample["is_end"]
                    bar.update(1)
            counts[split] = {
                "conversations": len(records_by_split[split]),
                "users": len({r["user_id"] or r["conversation_id"] for r in records_by_split[split]}),
                "samples": samples,
                "end_samples": ends,
                "longest_line_chars": longest,
            }
    return counts


@contextmanager
def progress_bars_off() -> Iterator[None]:
    from datasets.utils import disable_progress_bars, enable_progress_bars, are_progress_bars_disabled

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


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


def save_hf(out: Path, split_counts: dict[str, dict], *, progress: bool = False) -> Path:
    """The sample splits as a DatasetDict under `OUT/hf/`, read back from the JSONL files.

    pyarrow's multithreaded JSON reader builds the Arrow tables directly, which is much
    faster than going through Python dicts, and needs no `datasets` cache folder.
    """
    import pyarrow.json as pajson
    from datasets import Dataset, DatasetDict

    features = sample_features()
    parts = {}
    for split in SPLITS:
        path = out / f"{split}.jsonl"
        if split_counts[split]["samples"] == 0:
            parts[split] = Dataset.from_dict({name: [] for name in features}, features=features)
            continue
        # A block must hold the longest line whole.
        block = max(1 << 24, 2 * split_counts[split]["longest_line_chars"] * 4)
        table = pajson.read_json(
            path,
            read_options=pajson.ReadOptions(block_size=block),
            parse_options=pajson.ParseOptions(explicit_schema=features.arrow_schema),
        )
        parts[split] = Dataset(table.select(list(features)))
    final = out / "hf"
    staging = staging_folder(final)
    try:
        # One shard each: an empty split saved with none cannot be loaded back.
        with nullcontext() if progress else progress_bars_off():
            DatasetDict(parts).save_to_disk(str(staging), num_shards={split: 1 for split in SPLITS})
        return replace_folder(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

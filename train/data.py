"""Flipped samples in, token ids + completion masks out, checked before any training starts.

Samples come from what `userlm prep` writes, found by `flipped.samples.load_samples`
(a prep folder, a `DatasetDict` folder, or one JSONL file). Tokenising is `flipped.templates.tokenize_sample`,
the one place samples become ids, so the label mask is the evaluation mask.

Truncation (train/truncation.py, documented in docs/guide/train.md): a sample longer than
`max_length` loses its oldest whole exchanges first; the system message (intent and
persona) and the target turn are never cut. A sample that does not fit even so (its
system message, target and the end of the message it answers) cannot be trained on; by
recipe it either stops the run (`long_samples: error`) or is skipped and listed in
`skipped_samples.jsonl` (`long_samples: skip`). It is never dropped silently.

End samples (the user leaves) can be repeated (`end_sample_repeats`), so that the rare
`<|endconversation|>` target is seen more often in a short run.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from userlm.errors import UserError
from userlm.flipped.samples import datasets_folder, has_lines, load_samples, split_files
from userlm.flipped.templates import FlippedTemplate

from .truncation import fit_sample


def tokenize_split(
    dataset: Dataset, tokenizer, template: FlippedTemplate, max_length: int | None, num_proc: int | None = None
) -> tuple[Dataset, list[dict]]:
    """Tokenise and fit to max_length; returns the trainable rows (with a
    `truncated` flag) and the samples that cannot fit.

    `dataset` must hold a sample: `map` on no rows adds no columns to read back. `num_proc` is SFTConfig's
    `dataset_num_proc`: fitting whole turns renders each sample several times (about 130 samples/s on one core).
    """

    def encode(sample: dict) -> dict:
        fitted = fit_sample(tokenizer, template, sample, max_length)
        if fitted is None:
            return {"input_ids": [], "completion_mask": [], "trained_tokens": -1, "truncated": False}
        return {
            "input_ids": fitted.input_ids,
            "completion_mask": fitted.completion_mask,
            "trained_tokens": sum(fitted.completion_mask),
            "truncated": fitted.truncated,
        }

    encoded = dataset.map(encode, num_proc=num_proc, desc="Tokenising flipped samples")
    no_target = [i for i, n in enumerate(encoded["trained_tokens"]) if n == 0]
    if no_target:
        sample = dataset[no_target[0]]
        raise UserError(
            f"{len(no_target)} samples have no trained token (first: conversation {sample.get('conversation_id')!r}, "
            f"turn {sample.get('turn_index')}); their target turn is empty, so re-run `userlm prep` on the source."
        )
    skipped = [
        {
            "conversation_id": row.get("conversation_id"),
            "turn_index": row.get("turn_index"),
            "reason": "conditioning_and_target_longer_than_max_length",
        }
        for row, n in zip(dataset, encoded["trained_tokens"])
        if n < 0
    ]
    kept = encoded.filter(lambda row: row["trained_tokens"] > 0) if skipped else encoded
    columns = ["input_ids", "completion_mask", "truncated"] + (["is_end"] if "is_end" in kept.column_names else [])
    return kept.select_columns(columns), skipped


def prepare_datasets(
    config, tokenizer, template: FlippedTemplate, max_length: int | None
) -> tuple[Dataset, Dataset | None, dict]:
    """Train and validation sets ready for SFTTrainer, and what happened to the samples on the way."""
    check_training_split(config.dataset_path)
    samples = load_samples(config.dataset_path)
    if len(samples["train"]) == 0:
        raise UserError(empty_split_message(config.dataset_path))
    train = _subset(samples["train"], config.max_train_samples)
    # A split no user fell into is not in `samples` (flipped.samples leaves its empty file out).
    validation = _subset(samples["validation"], config.max_eval_samples) if "validation" in samples else None
    num_proc = config.sft.get("dataset_num_proc")
    train, skipped = tokenize_split(train, tokenizer, template, max_length, num_proc)
    if validation is not None:
        validation, skipped_eval = tokenize_split(validation, tokenizer, template, max_length, num_proc)
        skipped += [dict(row, split="validation") for row in skipped_eval]
    if skipped and config.long_samples == "error":
        first = skipped[0]
        raise UserError(
            f"{len(skipped)} samples do not fit max_length={max_length} even with their history dropped "
            f"(first: conversation {first['conversation_id']!r}, turn {first['turn_index']}); "
            "raise max_length, drop long turns in `userlm prep`, or set long_samples=skip."
        )
    if len(train) == 0:
        raise UserError(f"No training sample fits max_length={max_length}; raise max_length.")
    report = {"skipped": skipped, "truncated": sum(train["truncated"]), "end_samples": _end_count(train)}
    train = repeat_end_samples(train, config.end_sample_repeats)
    report["train_samples"] = len(train)
    return _trainer_columns(train), _trainer_columns(validation), report


def repeat_end_samples(train: Dataset, repeats: int) -> Dataset:
    """Each end sample `repeats` times in all (1: as prepared); the trainer shuffles them in."""
    if repeats == 1 or "is_end" not in train.column_names:
        return train
    ends = train.filter(lambda row: row["is_end"])
    return concatenate_datasets([train, *[ends] * (repeats - 1)]) if len(ends) else train


def _end_count(dataset: Dataset) -> int:
    return sum(dataset["is_end"]) if "is_end" in dataset.column_names else 0


def _trainer_columns(dataset: Dataset | None) -> Dataset | None:
    return None if dataset is None else dataset.select_columns(["input_ids", "completion_mask"])


def _subset(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


# ---------------------------------------------------------------- an empty training split


def check_training_split(path: Path) -> None:
    """A prep folder whose train split is missing or empty stops here, naming the prep filters that emptied it."""
    path = Path(path)
    if not path.is_dir() or datasets_folder(path) is not None:
        return
    train = split_files(path).get("train")
    if train is None and not (path / "stats.json").exists():
        return  # not a prep folder: load_samples says what it needs
    if train is None or not has_lines(train):
        raise UserError(empty_split_message(path))


def empty_split_message(path: Path) -> str:
    """One sentence: the training split is empty, and which prep filters and rejections removed the records."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    stats = read_stats(folder / "stats.json")
    if stats is None:
        return f"{path} holds no training samples; run `userlm prep` on more logs and point dataset_path at its output."
    removed = [(f"{name} filter", count) for name, count in (stats.get("filtered") or {}).items() if count]
    removed += [(f"rejected as {reason}", count) for reason, count in (stats.get("rejected") or {}).items() if count]
    removed.sort(key=lambda item: -item[1])
    read = stats.get("read", "?")
    lost = "; ".join(f"{name}: {count}" for name, count in removed) or "none filtered or rejected"
    train = (stats.get("splits") or {}).get("train") or {}
    share = f", and {train.get('conversations', 0)} went to the train split" if train else ""
    return (
        f"{folder} holds no training samples: of {read} records read, prep removed them by ({lost}){share} "
        f"(see {folder / 'stats.json'}); loosen those prep options (e.g. languages, "
        "persona_filter, split) and run `userlm prep` again."
    )


def read_stats(path: Path) -> dict | None:
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) else None

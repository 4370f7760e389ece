"""Flipped samples in, token ids + completion masks out, checked before any training starts.

Samples come from what `userlm prep` writes, found by `data_prep.samples.load_samples`
(a prep folder, a `DatasetDict` folder, or one JSONL file). Tokenising is `data_prep.templates.tokenize_sample`,
the one place samples become ids, so the label mask is the evaluation mask.

Truncation (documented in the README): a sample longer than `max_length` loses the
*start of its prompt* (oldest history first), never its target turn, because the target
is what we train on. A sample whose target turn alone does not fit has no whole target
left; by recipe it either stops the run (`long_samples: error`) or is skipped and listed
in `skipped_samples.jsonl` (`long_samples: skip`). It is never dropped silently.
"""

from __future__ import annotations


from datasets import Dataset

from userlm.data_prep.samples import load_samples
from userlm.data_prep.templates import FlippedTemplate, tokenize_sample
from userlm.errors import UserError

def tokenize_split(dataset: Dataset, tokenizer, template: FlippedTemplate, max_length: int | None) -> tuple[Dataset, list[dict]]:
    """Tokenise and left-truncate; returns the trainable rows and the samples whose target turn does not fit."""

    def encode(sample: dict) -> dict:
        ids = tokenize_sample(tokenizer, template, sample)
        input_ids, mask = ids["input_ids"], ids["completion_mask"]
        completion_length = sum(mask)
        fits = max_length is None or completion_length <= max_length
        if max_length is not None and fits and len(input_ids) > max_length:
            input_ids, mask = input_ids[-max_length:], mask[-max_length:]
        return {"input_ids": input_ids, "completion_mask": mask, "trained_tokens": completion_length, "fits": fits}

    encoded = dataset.map(encode, desc="Tokenising flipped samples")
    no_target = [i for i, n in enumerate(encoded["trained_tokens"]) if n == 0]
    if no_target:
        sample = dataset[no_target[0]]
        raise UserError(
            f"{len(no_target)} samples have no trained token (first: conversation {sample.get('conversation_id')!r}, "
            f"turn {sample.get('turn_index')}); their target turn is empty, so re-run `userlm prep` on the source."
        )
    fits = encoded["fits"]
    skipped = [
        {"conversation_id": row.get("conversation_id"), "turn_index": row.get("turn_index"), "trained_tokens": n, "reason": "target_longer_than_max_length"}
        for row, n, ok in zip(dataset, encoded["trained_tokens"], fits)
        if not ok
    ]
    kept = encoded.filter(lambda row: row["fits"]) if skipped else encoded
    return kept.select_columns(["input_ids", "completion_mask"]), skipped


def prepare_datasets(config, tokenizer, template: FlippedTemplate, max_length: int | None) -> tuple[Dataset, Dataset | None, list[dict]]:
    """Train and validation sets ready for SFTTrainer, after the long-sample policy."""
    samples = load_samples(config.dataset_path)
    train = _subset(samples["train"], config.max_train_samples)
    validation = _subset(samples["validation"], config.max_eval_samples) if "validation" in samples else None
    train, skipped = tokenize_split(train, tokenizer, template, max_length)
    if validation is not None:
        validation, skipped_eval = tokenize_split(validation, tokenizer, template, max_length)
        skipped += [dict(row, split="validation") for row in skipped_eval]
    if skipped and config.long_samples == "error":
        first = skipped[0]
        raise UserError(
            f"{len(skipped)} samples have a target user turn longer than max_length={max_length} "
            f"(first: conversation {first['conversation_id']!r}, {first['trained_tokens']} tokens); "
            "raise max_length, drop long turns in `userlm prep`, or set long_samples=skip."
        )
    if len(train) == 0:
        raise UserError(f"No training sample fits max_length={max_length}; raise max_length.")
    return train, validation, skipped


def _subset(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset

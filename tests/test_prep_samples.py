"""What prep writes is what the other stages read: `datasets.load_dataset` opens the compressed
sample files as they are, in TRL's prompt-completion shape, and `flipped.samples` finds the
samples and the conversation records of a prep folder."""

from __future__ import annotations

from pathlib import Path

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep
from userlm.flipped.samples import iter_conversations, load_samples, split_file

FIXTURES = Path(__file__).parent / "fixtures" / "prep"


def test_samples_open_with_datasets_and_the_samples_module(tmp_path):
    from datasets import load_dataset

    out = tmp_path / "out"
    result = prep(
        PrepConfig(
            inputs=[FIXTURES / "openai.jsonl", FIXTURES / "wildchat.jsonl"],
            out=out,
            languages=None,
            split=(0.7, 0.3, 0.0),
            progress=False,
        )
    )
    counts = result.stats["splits"]
    raw = load_dataset("json", data_files={"train": str(out / "train.jsonl.gz")}, split="train")
    assert len(raw) == counts["train"]["samples"] > 0
    first = raw[0]
    assert first["prompt"][0]["role"] == "system" and first["completion"] == [
        {"role": "user", "content": first["completion"][0]["content"]}
    ]
    assert split_file(out, "validation") == out / "validation.jsonl.gz"
    loaded = load_samples(out)
    assert counts["test"]["samples"] == 0  # no user fell into it: left out, not an error
    assert {split: len(loaded[split]) for split in loaded} == {
        "train": counts["train"]["samples"],
        "validation": counts["validation"]["samples"],
    }
    # The conversation records, e.g. the held-out users' turns for persona fidelity.
    records = list(iter_conversations(out))
    assert len(records) == result.stats["kept"]
    held_out = [r for r in records if r["meta"]["split"] == "validation"]
    assert len(held_out) == counts["validation"]["conversations"] > 0
    assert all(r["messages"][0]["role"] == "user" for r in held_out)

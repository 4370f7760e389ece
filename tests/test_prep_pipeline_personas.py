"""Personas inside `prep`: assigned after dedup and before the split, failures rejected,
the persona subset counted as a filter, and the persona in every sample's system message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep
from userlm.errors import UserError
from userlm.flipped.format import system_text
from userlm.flipped.samples import open_lines

FIXTURES = Path(__file__).parent / "fixtures" / "prep"


def run(tmp_path: Path, **options):
    return prep(
        PrepConfig(
            inputs=[FIXTURES / "openai.jsonl", FIXTURES / "wildchat.jsonl"],
            out=tmp_path,
            languages=None,
            split=(1.0, 0.0, 0.0),
            progress=False,
            hf=False,
            **options,
        )
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for _, line in open_lines(path)]


def test_style_personas_reach_every_sample(tmp_path):
    result = run(tmp_path, personas="style")
    records = {r["conversation_id"]: r for r in read_jsonl(result.written["conversations"])}
    assert len(records) == result.stats["kept"] == 6
    for record in records.values():
        assert record["persona"] and record["persona_attrs"]["source"] == "style"
    for sample in read_jsonl(result.written["train"]):
        record = records[sample["conversation_id"]]
        assert sample["prompt"][0]["content"] == system_text(record["intent"], record["persona"])
        assert record["persona"] in sample["prompt"][0]["content"]


def test_persona_column_failures_are_rejected_and_counted(tmp_path):
    result = run(tmp_path, personas="column", persona_column="goal")
    stats = result.stats
    assert stats["kept"] == 2
    assert stats["rejected"] == {"persona_column_missing": 4}
    assert stats["read"] == stats["kept"] + sum(stats["rejected"].values()) + sum(stats["filtered"].values())


def test_persona_filter_is_a_counted_filter(tmp_path):
    # Mean words per user turn, per user: customer-17 7.3, customer-42 5, the French WildChat
    # user 6, the WildChat user ip-aaa (two conversations) 10.3.
    result = run(tmp_path, persona_filter="words_per_turn<=8")
    stats = result.stats
    assert stats["filtered"]["persona_filter"] == 2 and stats["kept"] == 4
    kept = {r["conversation_id"] for r in read_jsonl(result.written["conversations"])}
    assert kept == {"oa-1", "oa-2", "oa-3", "wc-002"}


def test_bad_persona_filter_stops_before_any_work(tmp_path):
    with pytest.raises(UserError, match="persona filter"):
        run(tmp_path / "never", persona_filter="shoe_size>3")
    assert not (tmp_path / "never").exists()

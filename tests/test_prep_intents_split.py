"""Heuristic and column intents, the intent dispatcher, and the user-level split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from userlm.data_prep.format import INTENT_PREFIX
from userlm.data_prep.intents import assign_intents, heuristic_intent, task_of, topic_words
from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep
from userlm.data_prep.split import split_of

FIXTURES = Path(__file__).parent / "fixtures" / "prep"


def record(*user_turns: str, **fields) -> dict:
    messages = []
    for turn in user_turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "OK."}]
    return {"conversation_id": "c", "user_id": None, "messages": messages, "columns": {}, "meta": {}, **fields}


def test_heuristic_task_types():
    assert task_of("Write a cover letter for a nursing job") == "get help writing a cover letter"
    assert task_of("can you draft a short email to my landlord") == "get help writing an email"
    assert task_of("Translate this paragraph into German") == "get a piece of text translated"
    assert task_of("my python script throws an error") == "get help with a programming task"
    assert task_of("Solve the equation x^2 = 9") == "work through a math problem"
    assert task_of("Act as a travel agent") == "set up a role-play with the assistant"
    assert task_of("Where is the nearest star?") == "get answers to some questions"
    assert task_of("Hello there") == "get help with a task"


def test_heuristic_intent_is_high_level_and_never_the_first_turn():
    intent = heuristic_intent(record("Write a blog post about composting in small apartments", "Make it funnier"))
    assert intent == f"{INTENT_PREFIX} get help writing a blog post, touching on composting, small and apartments."
    # A first turn made only of topic words is never copied whole.
    short = heuristic_intent(record("Photosynthesis chlorophyll"))
    assert "photosynthesis" not in short or "chlorophyll" not in short
    assert topic_words("photosynthesis", "photosynthesis") == []
    # Non-Latin text has no topic words the rules know, so it gets the generic task alone.
    assert heuristic_intent(record("光合作用是什么？")) == f"{INTENT_PREFIX} get help with a task."


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

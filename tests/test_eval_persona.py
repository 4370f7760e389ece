"""Persona fidelity and the persona contrast probe: hand-computed examples (exact values), users
read from the conversations file prep writes, and the contrast probe on the real SmolLM2."""

from __future__ import annotations

import json

import pytest

from tests.conftest import conversation_record
from userlm.evaluation.persona_contrast import ELABORATE, TERSE, contrast_prompts, persona_contrast
from userlm.evaluation.persona_fidelity import held_out_users, style_agreement, turns_by_user
from userlm.evaluation.subsets import conversation_users
from userlm.flipped.format import END_MARKER, flip, parse_system_text
from userlm.flipped.style import render_style

INTENT = "You are a user chatting with an assistant language model to get things done."


def samples_of(records):
    return [s for r in records for s in flip(r, "test")]


def test_style_agreement_hand_computed():
    reference = {
        "words_per_turn": 4.0,
        "lowercase_start_rate": 1.0,
        "punctuation_rate": 1.0,
        "typo_rate": 0.0,
        "question_rate": 1.0,
        "politeness_rate": 0.0,
        "buckets": {
            "length": "very_short",
            "lowercase": "often",
            "punctuation": "often",
            "typos": "rare",
            "questions": "often",
            "politeness": "rare",
        },
    }
    # "ok" twice: 1 word, lowercase, no final punctuation, no typo, no question, not polite: it misses
    # punctuation and questions (4 of 6 buckets); errors 3 words, 0, 100, 0, 100, 0 points.
    # "Could you please help?" and END: the END is left out; 4 words, capital, "?", polite, a question:
    # misses lowercase and politeness (4 of 6); errors 0, 100, 0, 0, 0, 100.
    result = style_agreement(
        [["ok", "ok"], ["Could you please help?", END_MARKER], [END_MARKER]], [reference] * 3, ["a", "b", "c"], seed=0
    )
    assert result["value"] == pytest.approx(100 * 4 / 6)
    assert result["n"] == 2 and result["end_turns"] == 2 and result["users_without_turns"] == 1
    # Resampled by user: both users agree on 4 of 6 buckets, so every resample does too.
    assert result["unit"] == "user" and result["units"] == 2 and result["ci"] == pytest.approx([100 * 4 / 6] * 2)
    assert {m: e["value"] for m, e in result["errors"].items()} == {
        "words_per_turn": 1.5,
        "lowercase_start_rate": 50.0,
        "punctuation_rate": 50.0,
        "typo_rate": 0.0,
        "question_rate": 50.0,
        "politeness_rate": 50.0,
    }
    assert result["errors"]["words_per_turn"]["ci"] == [0.0, 3.0]  # errors 3 and 0: a resample draws either twice
    assert {b: e["value"] for b, e in result["bucket_agreement"].items()} == {
        "length": 100.0,
        "lowercase": 50.0,
        "punctuation": 50.0,
        "typos": 100.0,
        "questions": 50.0,
        "politeness": 50.0,
    }


def test_held_out_users_split_each_users_turns_and_carry_the_reference_as_persona():
    records = [
        conversation_record(
            "a_0", ["hi there", "THANKS a lot!", "ok and then?"], ["Hello.", "You're welcome.", "Bye."], INTENT, {}
        ),
        conversation_record("a_1", ["next question pls"], ["Sure."], INTENT, {}),
        conversation_record("b_0", ["Only one turn here."], ["Fine."], INTENT, {}),
    ]
    users = {"a_0": "a", "a_1": "a", "b_0": "b"}
    grouped = turns_by_user(samples_of(records), users)
    assert {u: [s["completion"][0]["content"] for s in t] for u, t in grouped.items()} == {
        "a": ["hi there", "THANKS a lot!", "ok and then?", "next question pls"],
        "b": ["Only one turn here."],
    }
    chosen, counts = held_out_users(
        samples_of(records), users, count=5, turns_per_user=5, fits=lambda prompt: True, persona_filter=None, seed=0
    )
    assert counts == {"users": 2, "users_eligible": 1, "users_filtered_out": 0, "users_drawn": 1}
    (user,) = chosen
    # Scored: the 1st and 3rd turns; reference: the 2nd and 4th (3 words each, capitalised once, no question).
    assert user.real_turns == ["hi there", "ok and then?"]
    assert user.reference["words_per_turn"] == 3.0 and user.reference["lowercase_start_rate"] == 0.5
    assert user.reference["question_rate"] == 0.0
    # The persona rendered from the reference replaces the system message's persona; the real history stays.
    assert parse_system_text(user.prompts[1][0]["content"]) == (INTENT, render_style(user.reference))
    assert user.prompts[1][1:] == samples_of(records[:1])[2]["prompt"][1:] and len(user.prompts[1]) == 5
    # The filter reads the reference half alone: 3 words a turn there (2.75 over all of user a's turns).
    for condition, filtered_out in (("words_per_turn>2.9", 0), ("words_per_turn>3", 1)):
        assert (
            held_out_users(
                samples_of(records),
                users,
                count=5,
                turns_per_user=5,
                fits=lambda prompt: True,
                persona_filter=condition,
                seed=0,
            )[1]["users_filtered_out"]
            == filtered_out
        )
    # The size limit reads the prompt the model is given: a limit under the 3rd turn's prompt keeps the 1st alone.
    (kept,), _ = held_out_users(
        samples_of(records),
        users,
        count=5,
        turns_per_user=5,
        persona_filter=None,
        seed=0,
        fits=lambda prompt: len(prompt) < 5,
    )
    assert kept.real_turns == ["hi there"]


def test_users_come_from_the_conversations_file_beside_the_test_data(tmp_path):
    folder = tmp_path / "prep"
    folder.mkdir()
    records = [
        {"conversation_id": "x_0", "user_id": "x", "messages": []},
        {"conversation_id": "y", "user_id": None, "messages": []},
    ]
    (folder / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert conversation_users(folder / "test.jsonl") == {"x_0": "x"}
    assert conversation_users(tmp_path / "elsewhere" / "test.jsonl") == {}


def test_persona_contrast_hand_computed():
    assert "very short" in TERSE and "long messages" in ELABORATE
    terse, elaborate = contrast_prompts(["You are a user chatting with an assistant language model to plan a trip."])
    assert (
        parse_system_text(terse[0][0]["content"])[1] == TERSE
        and parse_system_text(elaborate[0][0]["content"])[1] == ELABORATE
    )
    result = persona_contrast(
        ["need trip ideas", "cheap flights?", END_MARKER],
        [
            "Could you please suggest a relaxing week in Portugal for two?",
            "Thank you, what about the flights there.",
            "Hello.",
        ],
        ["trip", "flights", "greeting"],
        seed=0,
    )
    # The pair with an END is left out. Terse: 2.5 words a turn, all lowercase, one "?" of 2 ends punctuated,
    # no politeness. Elaborate: (11 + 7) / 2 = 9 words, capitals, both punctuated, both polite.
    assert result["n"] == 2 and result["pairs_with_an_end"] == 1
    # The mean of the per-intent differences, 8 and 5, resampled by intent.
    assert result["value"] == 6.5 and result["unit"] == "intent" and result["ci"] == [5.0, 8.0]
    assert {m: (v["terse"], v["elaborate"], v["as_expected"]) for m, v in result["measures"].items()} == {
        "words_per_turn": (2.5, 9.0, True),
        "lowercase_start_rate": (1.0, 0.0, True),
        "punctuation_rate": (0.5, 1.0, True),
        "typo_rate": (0.0, 0.0, False),
        "politeness_rate": (0.0, 1.0, True),
    }
    assert result["as_expected"] == 4 and result["elaborate_longer"] == 2


def test_the_contrast_probe_on_the_real_smollm2_gives_different_words_per_turn(default_model_dir, eval_test_file):
    from userlm.evaluation.config import EvalConfig
    from userlm.evaluation.scoring import contrast
    from userlm.infer.simulator import UserSimulator

    simulator = UserSimulator.load("default", template="chatml")
    intents = [
        f"You are a user chatting with an assistant language model to {goal}."
        for goal in (
            "plan a weekend trip to Porto",
            "fix a slow SQL query",
            "get a dinner recipe with rice",
            "write a birthday poem",
        )
    ]
    config = EvalConfig(
        checkpoints=["base=default@chatml"],
        data=eval_test_file,
        max_new_tokens=8,
        contrast_max_new_tokens=40,
        progress=False,
    )
    result = contrast(simulator, intents, config, "smollm2")
    measures = result["measures"]
    assert result["n"] >= 3
    assert measures["words_per_turn"]["terse"] != measures["words_per_turn"]["elaborate"]
    assert result["value"] == pytest.approx(
        measures["words_per_turn"]["elaborate"] - measures["words_per_turn"]["terse"], abs=0.01
    )
    # Full-length turns: the contrast's own token budget (40), not max_new_tokens (8 tokens, fewer than 8 words).
    assert max(measures["words_per_turn"]["terse"], measures["words_per_turn"]["elaborate"]) > 8

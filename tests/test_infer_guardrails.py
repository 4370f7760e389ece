"""Each guardrail (docs/design.md#guardrails) on a real tiny Llama whose output layer is set so that it
wants to break that guardrail, then the same behaviours on the real SmolLM2 default."""

from __future__ import annotations

import copy

import pytest
import torch

from userlm.flipped.format import END_MARKER, system_text
from userlm.flipped.templates import CHATML
from userlm.infer.guardrails import Guardrails, first_word, normalise, repeated_source
from userlm.infer.simulator import UserSimulator

INTENT = "You are a user chatting with an assistant language model to get help with a recipe."
EOT = "<|im_end|>"
OFF = dict(banned_first_words=(), min_turns_before_end=0, min_words=None, max_words=None, filter_repetition=False)


@pytest.fixture
def programmed(programmed_simulator):
    """A factory: programmed(start, transitions) -> UserSimulator loaded from a bigram-programmed checkpoint."""
    return lambda start, transitions: UserSimulator.load(programmed_simulator(start, transitions))


CHAIN = {"Please": {" help": 30}, " help": {" me": 30}, " me": {" now": 30}, " now": {EOT: 30}}


def prompt(*turns: str) -> list[dict]:
    messages = [{"role": "system", "content": INTENT}]
    for k, text in enumerate(turns):
        messages.append({"role": "user" if k % 2 == 0 else "assistant", "content": text})
    return messages


def test_first_word_filter_redraws_the_banned_word(programmed):
    sim = programmed({"I": 30, "Please": 25}, {"I": {" need": 30}, " need": {" help": 30}, **CHAIN})
    [unguarded] = sim.generate([prompt()], seed=0)
    assert unguarded.text == "I need help me now"
    [guarded] = sim.generate([prompt()], guardrails=Guardrails(**{**OFF, "banned_first_words": ("I",)}), seed=0)
    assert guarded.text == "Please help me now"
    assert guarded.events == [{"guardrail": "first_word", "action": "redrawn", "token": "I", "attempt": 1}]


def test_end_marker_is_banned_before_the_minimum_turns_and_allowed_after(programmed):
    sim = programmed({END_MARKER: 30, "Please": 25}, CHAIN)
    guardrails = Guardrails(**{**OFF, "min_turns_before_end": 2})
    early, one_turn, late = sim.generate(
        [prompt(), prompt("hi there friend", "Hello!"), prompt("a b c", "x", "d e f", "y")],
        guardrails=guardrails,
        seed=3,
    )
    for turn in (early, one_turn):
        assert not turn.is_end and turn.text == "Please help me now"
        assert turn.events == [{"guardrail": "end_too_early", "action": "redrawn", "attempt": 1}]
    assert late.is_end and late.text == END_MARKER and late.events == []
    [never] = sim.generate(
        [prompt("a b c", "x", "d e f", "y")], guardrails=Guardrails(**{**OFF, "min_turns_before_end": "never"})
    )
    assert not never.is_end and never.events[0]["guardrail"] == "end_too_early"
    [unguarded] = sim.generate([prompt()])
    assert unguarded.is_end


def test_too_short_turns_are_resampled(programmed):
    sim = programmed({"Hi": 30, "Please": 29.5}, {"Hi": {EOT: 30}, **CHAIN})
    seeds = list(range(6))
    assert "Hi" in [t.text for t in sim.generate([prompt()] * 6, seed=seeds)]
    guardrails = Guardrails(**{**OFF, "min_words": 3, "max_attempts": 8})
    turns = sim.generate([prompt()] * 6, guardrails=guardrails, seed=seeds)
    assert all(t.text == "Please help me now" and not t.exhausted for t in turns)
    rejections = [e for t in turns for e in t.events]
    assert rejections and all(e["guardrail"] == "length" and e["draft"] == "Hi" and e["words"] == 1 for e in rejections)
    assert all(t.attempts == 1 + len(t.events) for t in turns)


def test_too_long_turns_are_cut_early_and_resampled(programmed):
    sim = programmed({"Tell": 30, "Please": 29.5}, {"Tell": {" more": 30}, " more": {" more": 30}, **CHAIN})
    guardrails = Guardrails(**{**OFF, "max_words": 5, "max_attempts": 8})
    turns = sim.generate([prompt()] * 6, guardrails=guardrails, seed=list(range(6)), max_new_tokens=40)
    assert all(t.text == "Please help me now" for t in turns)
    rejections = [e for t in turns for e in t.events]
    assert rejections and all(e["guardrail"] == "length" for e in rejections)
    # The draft was stopped as soon as it had one word too many, not at max_new_tokens.
    assert all(e["words"] == 6 and e["draft"].startswith("Tell more") for e in rejections)


def test_verbatim_repeats_are_resampled(programmed):
    sim = programmed({"Please": 30, "Hello": 30}, {"Hello": {" there": 30}, " there": {" now": 30}, **CHAIN})
    guardrails = Guardrails(**{**OFF, "filter_repetition": True, "max_attempts": 8})
    earlier = prompt("PLEASE  help me   now", "Sure.")
    turns = sim.generate([earlier] * 6, guardrails=guardrails, seed=list(range(6)))
    assert all(t.text == "Hello there now" for t in turns)
    rejections = [e for t in turns for e in t.events]
    assert rejections and all(e == {**e, "guardrail": "repetition", "repeats": "user_turn"} for e in rejections)
    # An assistant turn and the intent count too.
    repeats_assistant = prompt("what now", "please help me now")
    repeats_intent = [{"role": "system", "content": "Please help me now\n\nWrites short."}]
    sources = {
        e["repeats"]
        for t in sim.generate([repeats_assistant] * 6 + [repeats_intent] * 6, guardrails=guardrails, seed=10)
        for e in t.events
    }
    assert sources == {"assistant_turn", "intent"}


def test_repetition_of_the_intent_is_read_through_the_format():
    # An intent with a blank line of its own: the system message still parses back into it.
    intent = "You are a user chatting with an assistant language model to plan a trip.\n\nTo Rome, in May."
    system = [{"role": "system", "content": system_text(intent, "Writes short.")}]
    assert (
        repeated_source(
            "you are a user chatting with an assistant language model to plan a trip. to rome, in may.", system
        )
        == "intent"
    )
    assert repeated_source("Writes short.", system) is None
    assert repeated_source("To Rome, in May.", system) is None


def test_fallback_after_the_cap_is_recorded(programmed):
    sim = programmed({"Please": 30}, CHAIN)
    earlier = prompt("please help me now", "Sure.")
    [ended] = sim.generate([earlier], guardrails=Guardrails(**{**OFF, "filter_repetition": True, "max_attempts": 3}))
    assert ended.exhausted and ended.attempts == 3
    assert [e["guardrail"] for e in ended.events] == ["repetition"] * 3 + ["fallback"]
    assert ended.events[-1]["action"] == "end"
    [kept] = sim.generate(
        [earlier], guardrails=Guardrails(**{**OFF, "filter_repetition": True, "max_attempts": 2, "fallback": "keep"})
    )
    assert not kept.exhausted and kept.text == "Please help me now" and kept.events[-1]["action"] == "keep"


@pytest.fixture(scope="module")
def smollm2():
    return UserSimulator.load("default")


def test_smollm2_first_word_filter(smollm2):
    [unguarded] = smollm2.generate([prompt()], seed=5, max_new_tokens=3)
    word = first_word(unguarded.text)
    assert word
    [guarded] = smollm2.generate(
        [prompt()], guardrails=Guardrails(**{**OFF, "banned_first_words": (word,)}), seed=5, max_new_tokens=3
    )
    assert first_word(guarded.text) != word
    assert guarded.events[0]["guardrail"] == "first_word" and first_word(guarded.events[0]["token"]) == word


def test_smollm2_with_an_eager_end_marker(default_model_dir, smollm2):
    """SmolLM2 with `<|endconversation|>` added, its row set to twice the row of the token
    it would open the turn with, so it wants to leave at once."""
    tokenizer = copy.deepcopy(smollm2.tokenizer)
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    model = copy.deepcopy(smollm2.model)
    model.resize_token_embeddings(len(tokenizer))
    [first] = smollm2.generate([prompt()], seed=1, max_new_tokens=1, temperature=0)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[len(tokenizer) - 1] = 2 * embeddings[tokenizer(first.text, add_special_tokens=False)["input_ids"][0]]
    sim = UserSimulator(model, tokenizer, CHATML)
    [eager] = sim.generate([prompt()], seed=1, max_new_tokens=4)
    assert eager.is_end and eager.text == END_MARKER
    [held] = sim.generate(
        [prompt()], guardrails=Guardrails(**{**OFF, "min_turns_before_end": 1}), seed=1, max_new_tokens=4
    )
    assert not held.is_end and END_MARKER not in held.text
    assert held.events[0] == {"guardrail": "end_too_early", "action": "redrawn", "attempt": 1}


def test_smollm2_length_bounds(smollm2):
    guardrails = Guardrails(**{**OFF, "max_words": 2, "max_attempts": 2})
    [turn] = smollm2.generate([prompt()], guardrails=guardrails, seed=2, max_new_tokens=8)
    # Prompted SmolLM2 writes long turns: each draft is stopped at its third word and rejected,
    # the second draws with its own seed, then the fallback ends the turn.
    assert [(e["guardrail"], e.get("words"), e["attempt"]) for e in turn.events] == [
        ("length", 3, 1),
        ("length", 3, 2),
        ("fallback", None, 2),
    ]
    assert turn.events[0]["draft"] != turn.events[1]["draft"]
    assert turn.exhausted and turn.text == turn.events[1]["draft"]


def test_smollm2_repetition(smollm2):
    # Found by probing: at seed 0 SmolLM2 repeats the user's first turn word for word.
    repeats = prompt("Can you help me with a recipe?", "Hello")
    [unguarded] = smollm2.generate([repeats], seed=0, max_new_tokens=10)
    assert unguarded.text == "Can you help me with a recipe?"
    [guarded] = smollm2.generate(
        [repeats],
        guardrails=Guardrails(**{**OFF, "filter_repetition": True, "max_attempts": 4}),
        seed=0,
        max_new_tokens=10,
    )
    assert guarded.events[0] == {
        "guardrail": "repetition",
        "action": "rejected",
        "draft": unguarded.text,
        "repeats": "user_turn",
        "attempt": 1,
    }
    # A later draft that repeats nothing is taken.
    assert not guarded.exhausted and guarded.attempts == len(guarded.events) + 1
    assert all(e["guardrail"] == "repetition" for e in guarded.events)
    assert normalise(guarded.text) != normalise(unguarded.text) and repeated_source(guarded.text, repeats) is None


def test_redrafts_batched_together_give_what_one_by_one_gives(programmed):
    # Rejected rows of a batch redraft several attempts in one call; each row's turn, events and
    # attempt count are still those of trying its attempts one by one, alone.
    sim = programmed({"Hi": 30, "Please": 29.5}, {"Hi": {EOT: 30}, **CHAIN})
    guardrails = Guardrails(**{**OFF, "min_words": 3, "max_attempts": 6})
    seeds = list(range(8))
    together = sim.generate([prompt()] * 8, guardrails=guardrails, seed=seeds)
    alone = [sim.generate([prompt()], guardrails=guardrails, seed=[s])[0] for s in seeds]
    assert [(t.text, t.events, t.attempts) for t in together] == [(t.text, t.events, t.attempts) for t in alone]
    assert max(t.attempts for t in together) > 2  # some row needed several redrafts

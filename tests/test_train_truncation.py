"""Truncation keeps the conditioning (docs/design.md#truncation): a flipped sample longer than max_length loses
its oldest whole exchanges first; the system message (intent and persona) and the target are
never cut. Checked on a long real ShareGPT conversation with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json

import pytest

from userlm.flipped.format import END_MARKER, flip, system_text
from userlm.flipped.templates import CHATML
from userlm.train.truncation import fit_sample

INTENT = "You are a user chatting with an assistant language model to turn a marketing book into an agency playbook."
PERSONA = (
    "You write long messages (about 40 words), starting with a capital letter; you usually end them with punctuation."
)


@pytest.fixture(scope="module")
def long_conversation(sharegpt_file) -> dict:
    """The first record of the bundled ShareGPT file (QWJhYvA_0): 6 user turns, about 9,700 characters."""
    text = sharegpt_file.open(encoding="utf-8").read(200_000)
    record, _ = json.JSONDecoder().raw_decode(text, text.index("{"))
    roles = {"human": "user", "gpt": "assistant"}
    messages = [{"role": roles[turn["from"]], "content": turn["value"]} for turn in record["conversations"]]
    assert record["id"] == "QWJhYvA_0" and len(messages) == 12
    return {"conversation_id": record["id"], "messages": messages, "intent": INTENT, "persona": PERSONA, "meta": {}}


def decoded_parts(tokenizer, fitted) -> tuple[str, str]:
    prompt = [t for t, m in zip(fitted.input_ids, fitted.completion_mask) if not m]
    target = [t for t, m in zip(fitted.input_ids, fitted.completion_mask) if m]
    return tokenizer.decode(prompt), tokenizer.decode(target)


def test_a_long_real_sample_loses_its_oldest_whole_exchanges_and_keeps_system_and_target(
    long_conversation, default_tokenizer
):
    samples = list(flip(long_conversation))
    last_turn = samples[5]  # system + 5 exchanges -> the sixth user turn
    whole = fit_sample(default_tokenizer, CHATML, last_turn, None)
    assert len(whole.input_ids) > 1500

    fitted = fit_sample(default_tokenizer, CHATML, last_turn, 1024)

    assert len(fitted.input_ids) <= 1024 and fitted.cut_characters == 0
    prompt, target = decoded_parts(default_tokenizer, fitted)
    system = system_text(INTENT, PERSONA)
    assert prompt.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n")  # intent and persona whole
    assert target == last_turn["completion"][0]["content"] + "<|im_end|>"
    # Whole exchanges went, oldest first: what is left is the newest messages, each whole, from a user turn.
    history = last_turn["prompt"][1:]
    dropped = fitted.dropped_messages
    assert dropped > 0 and dropped % 2 == 0
    kept = history[dropped:]
    assert kept[0]["role"] == "user"
    rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in kept)
    assert prompt == f"<|im_start|>system\n{system}<|im_end|>\n{rendered}<|im_start|>user\n"
    # The fewest exchanges went: keeping one more would not fit.
    one_more = {**last_turn, "prompt": [last_turn["prompt"][0], *history[dropped - 2 :]]}
    assert len(fit_sample(default_tokenizer, CHATML, one_more, None).input_ids) > 1024


def test_the_newest_message_loses_its_start_when_it_alone_is_too_long(long_conversation, default_tokenizer):
    end_sample = list(flip(long_conversation))[-1]
    assert end_sample["completion"][0]["content"] == END_MARKER

    fitted = fit_sample(default_tokenizer, CHATML, end_sample, 160)

    assert len(fitted.input_ids) <= 160 and fitted.cut_characters > 0
    prompt, target = decoded_parts(default_tokenizer, fitted)
    assert target == f"{END_MARKER}<|im_end|>"
    assert f"<|im_start|>system\n{system_text(INTENT, PERSONA)}<|im_end|>\n<|im_start|>assistant\n" in prompt
    newest = end_sample["prompt"][-1]["content"]
    kept_text = prompt.split("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n<|im_start|>user\n")
    assert newest.endswith(kept_text) and len(kept_text) == len(newest) - fitted.cut_characters > 0


def test_a_sample_whose_system_and_target_alone_do_not_fit_cannot_be_fitted(long_conversation, default_tokenizer):
    first_turn = list(flip(long_conversation))[0]
    assert fit_sample(default_tokenizer, CHATML, first_turn, 64) is None

"""The flipped templates render exactly the reference of docs/design.md#chat-templates, and
`tokenize_sample`'s mask covers exactly the completion (the user turn and its end token)."""

from __future__ import annotations

import pytest

from userlm.flipped.format import END_MARKER, flip
from userlm.flipped.templates import CHATML, USERLM_LLAMA3, attach_template, render, template_of, tokenize_sample

RECORD = {
    "conversation_id": "t1",
    "user_id": None,
    "source": "test",
    "language": "en",
    "messages": [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "Put it in boiling water for 8 minutes."},
        {"role": "user", "content": "Soft or hard?"},
        {"role": "assistant", "content": "Hard."},
    ],
    "system": None,
    "intent": "You are a user chatting with an assistant language model to learn to cook eggs.",
    "intent_source": "heuristic",
    "persona": "You write short messages.",
    "persona_attrs": None,
    "meta": {},
}

SYSTEM = "You are a user chatting with an assistant language model to learn to cook eggs.\n\nYou write short messages."

# Literal expected renderings of the prompt of the second sample (system, user, assistant).
LLAMA3_PROMPT = (
    "<|start_header_id|>system<|end_header_id|>\n" + SYSTEM + "<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\nHow do I boil an egg?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\nPut it in boiling water for 8 minutes.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>"
)
CHATML_PROMPT = (
    "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
    "<|im_start|>user\nHow do I boil an egg?<|im_end|>\n"
    "<|im_start|>assistant\nPut it in boiling water for 8 minutes.<|im_end|>\n"
    "<|im_start|>user\n"
)


@pytest.fixture
def tokenizer(default_tokenizer):
    import copy

    return copy.deepcopy(default_tokenizer)


@pytest.mark.parametrize(
    "template, expected, completion",
    [
        (USERLM_LLAMA3, LLAMA3_PROMPT, "\nSoft or hard?<|eot_id|>"),
        (CHATML, CHATML_PROMPT, "Soft or hard?<|im_end|>"),
    ],
)
def test_rendering_matches_the_reference(tokenizer, template, expected, completion):
    sample = list(flip(RECORD, "train"))[1]
    attach_template(tokenizer, template)
    assert template_of(tokenizer) is template
    assert render(tokenizer, template, sample["prompt"]) == expected
    # The attached template renders the same: inference cannot pick a different one.
    assert tokenizer.apply_chat_template(sample["prompt"], tokenize=False) == expected
    assert template.completion_text(sample["completion"][0]["content"]) == completion


def test_llama3_rendering_of_a_whole_conversation_and_the_end_sample(tokenizer):
    attach_template(tokenizer, USERLM_LLAMA3)
    end = list(flip(RECORD, "train"))[-1]
    assert end["is_end"] and end["completion"][0]["content"] == END_MARKER
    assert render(tokenizer, USERLM_LLAMA3, end["prompt"]) == (
        LLAMA3_PROMPT + "\nSoft or hard?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\nHard.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>"
    )
    assert USERLM_LLAMA3.completion_text(END_MARKER) == "\n<|endconversation|><|eot_id|>"


@pytest.mark.parametrize("template", [USERLM_LLAMA3, CHATML])
def test_tokenize_sample_mask_is_exactly_the_completion(tokenizer, template):
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    for sample in flip(RECORD, "train"):
        tokens = tokenize_sample(tokenizer, template, sample)
        ids, mask = tokens["input_ids"], tokens["completion_mask"]
        assert len(ids) == len(mask) and sum(mask) > 0
        trained = [i for i, m in zip(ids, mask) if m]
        untrained = [i for i, m in zip(ids, mask) if not m]
        assert tokenizer.decode(trained) == template.completion_text(sample["completion"][0]["content"])
        prompt_text = tokenizer.apply_chat_template(sample["prompt"], tokenize=False, chat_template=template.jinja)
        assert tokenizer.decode(untrained) == prompt_text
        # The mask is one contiguous block at the end.
        assert mask == [0] * mask.index(1) + [1] * (len(mask) - mask.index(1))


def test_system_text_parses_back_even_when_the_intent_has_a_blank_line():
    from userlm.flipped.format import parse_system_text, system_text

    intent = "You are a user chatting with an assistant language model to plan a trip.\n\nThey like trains."
    persona = "You write short messages.\n\nYou never say thanks."
    text = system_text(intent, persona)
    assert parse_system_text(text) == (
        "You are a user chatting with an assistant language model to plan a trip.\nThey like trains.",
        persona,
    )
    assert parse_system_text(system_text(intent)) == (parse_system_text(text)[0], None)

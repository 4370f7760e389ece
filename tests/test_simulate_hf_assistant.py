"""`userlm simulate --assistant hf:default`, the quickstart's assistant: the embedded SmolLM2
loaded in-process, answering every conversation of a batch in one greedy `generate`. Each of its
turns must be what SmolLM2, run on that conversation alone through its own chat template, writes:
batching conversations of different lengths (padding) must not change a reply."""

from __future__ import annotations

import json

import torch

from userlm.cli import main

EOT = "<|im_end|>"
# A simulator that never leaves: each turn is one of two sentences.
START = {"Please": 30, "Tell": 30}
TRANSITIONS = {
    "Please": {" help": 30},
    " help": {" me": 30},
    " me": {" now": 30},
    " now": {EOT: 30},
    "Tell": {" me": 30},
}
INTENTS = [
    "You are a user chatting with an assistant language model to plan a trip.",
    "You are a user chatting with an assistant language model to learn how compound interest works over many years.",
]
MAX_TOKENS = 6


def greedy_reply(model, tokenizer, messages: list[dict]) -> str:
    """SmolLM2's greedy reply to one conversation, unbatched."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_the_hf_default_assistant_answers_each_conversation_as_smollm2_does_alone(
    tmp_path, programmed_simulator, default_model_and_tokenizer
):
    simulator = programmed_simulator(START, TRANSITIONS)
    (tmp_path / "intents.txt").write_text("\n".join(INTENTS) + "\n")
    out = tmp_path / "sim.jsonl"
    argv = [
        "simulate",
        "--simulator",
        str(simulator),
        "--assistant",
        "hf:default",
        "--assistant-max-tokens",
        str(MAX_TOKENS),
        "--intents",
        str(tmp_path / "intents.txt"),
        "--n-per-intent",
        "2",
        "--max-turns",
        "2",
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--no-progress",
        "guardrails.filter_repetition=false",  # the simulator repeats itself by design
    ]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    assert all(r["assistant"]["kind"] == "hf" and r["assistant"]["path"] == "default" for r in records)
    model, tokenizer = default_model_and_tokenizer
    replies = 0
    for record in records:
        assert record["termination_reason"] == "max_turns"
        turns = [{"role": t["role"], "content": t["content"]} for t in record["turns"]]
        assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
        for i, turn in enumerate(turns):
            if turn["role"] == "assistant":
                assert turn["content"] == greedy_reply(model, tokenizer, turns[:i]) != ""
                replies += 1
    assert replies == 8

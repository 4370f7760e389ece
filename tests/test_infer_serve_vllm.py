"""A real vLLM (CPU build, its own environment) behind the completions backend and behind
`userlm serve`'s upstream mode, serving a folder shaped like microsoft/UserLM-8b (its own chat
template, an ordinary end marker, configs naming different end tokens)."""

from __future__ import annotations

import asyncio

import openai
import pytest

from userlm.endpoint import Endpoint
from userlm.flipped.format import END_MARKER
from userlm.infer.completions import CompletionsSimulator
from userlm.infer.guardrails import Guardrails

EOT_ID = "<|eot_id|>"
INTENT = "You are a user chatting with an assistant language model to plan a trip."
# Says one of two greetings and then, unless the end marker is banned, leaves after its words.
START = {"Hello": 30, "Hi": 30}
TRANSITIONS = {
    "Hello": {" there": 30},
    "Hi": {" there": 30},
    " there": {" friend": 30},
    " friend": {END_MARKER: 30, EOT_ID: 25},
}
TURNS = {"Hello there friend", "Hi there friend"}
# Repeating its one sentence is what this model does; only the repetition filter is off.
GUARDRAILS = Guardrails(filter_repetition=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, default_tokenizer):
    from tests.conftest import make_userlm_8b_like

    return make_userlm_8b_like(
        tmp_path_factory.mktemp("vllm-model") / "userlm-8b-like", default_tokenizer, START, TRANSITIONS
    )


@pytest.fixture(scope="module")
def upstream(vllm_server, folder):
    return vllm_server(folder, "userlm-8b-like")


def prompt(*turns: str) -> list[dict]:
    roles = ("user", "assistant")
    return [{"role": "system", "content": INTENT}, *({"role": roles[i % 2], "content": t} for i, t in enumerate(turns))]


def test_the_completions_backend_against_vllm(upstream, folder):
    simulator = CompletionsSimulator(Endpoint(base_url=upstream, model="userlm-8b-like"), folder, server="vllm")
    assert simulator.template.name == "userlm-llama3"
    two_turns = prompt("Hello there friend", "Sure.", "Hi there friend", "Anything else?")

    async def run():
        try:
            early = await simulator.agenerate([prompt()] * 6, guardrails=GUARDRAILS, seed=list(range(6)))
            again = await simulator.agenerate([prompt()] * 6, guardrails=GUARDRAILS, seed=list(range(6)))
            late = await simulator.agenerate([two_turns], guardrails=GUARDRAILS, seed=1)
            unguarded = await simulator.agenerate([prompt()], seed=1)
            return early, again, late, unguarded
        finally:
            await simulator.aclose()

    early, again, [late], [unguarded] = asyncio.run(run())
    # Too early to leave: vLLM's logit_bias took the end marker out, so no draft was even rejected.
    assert {t.text for t in early} == TURNS and not any(t.is_end or t.events for t in early)
    assert [t.text for t in again] == [t.text for t in early]  # seeds honoured
    # Allowed to leave: the words before the (ordinary) end marker are the last turn.
    assert late.is_end and late.text in TURNS
    assert unguarded.is_end and unguarded.text in TURNS


def test_userlm_serve_in_front_of_vllm(userlm_server, upstream, folder):
    server = userlm_server(
        folder,
        "--simulator-endpoint",
        upstream,
        "--simulator-model",
        "userlm-8b-like",
        "--simulator-server",
        "vllm",
        "guardrails.filter_repetition=false",
        "--model-name",
        "persona",
    )
    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    first = client.chat.completions.create(model="persona", messages=prompt(), n=4, seed=5)
    texts = [c.message.content for c in first.choices]
    assert set(texts) <= TURNS and not any(c.model_extra["userlm"]["ended"] for c in first.choices)
    assert [
        c.message.content
        for c in client.chat.completions.create(model="persona", messages=prompt(), n=4, seed=5).choices
    ] == texts
    [left] = client.chat.completions.create(
        model="persona",
        messages=prompt("Hello there friend", "Sure.", "Hi there friend", "Anything else?"),
        extra_body={"end_text": "###STOP###"},
    ).choices
    assert left.model_extra["userlm"]["ended"] and left.finish_reason == "stop"
    words, _, end = left.message.content.rpartition(" ")
    assert words in TURNS and end == "###STOP###"
    with pytest.raises(openai.BadRequestError, match="context is 2,048"):
        client.chat.completions.create(model="persona", messages=prompt("word " * 3000, "ok"))

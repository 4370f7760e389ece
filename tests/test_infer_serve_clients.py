"""The clients testers already use, for real, against a real `userlm serve` on loopback: the
`openai` SDK (sync and async, n > 1, seed), LiteLLM's `openai/<name>` route with api_base (what
tau2-bench's --user-llm and Sotopia take), and DeepEval's ConversationSimulator driving whole
conversations through the adapter shipped in the package (telemetry off, offline)."""

from __future__ import annotations

import asyncio
import os

import openai
import pytest

from tests.conftest import SERVED_INTENT as INTENT
from tests.conftest import SERVED_OPENINGS as OPENINGS
from userlm.data_prep.fleet import import_litellm
from userlm.flipped.format import END_MARKER

os.environ["DEEPEVAL_TELEMETRY_OPT_OUT"] = "YES"


@pytest.fixture(scope="module")
def server(userlm_server, served_persona):
    return userlm_server(served_persona)


@pytest.fixture(scope="module")
def tau2_server(userlm_server, served_persona):
    """Served as tau2-bench's --user-llm expects: roles flipped, leaving is ###STOP###."""
    return userlm_server(served_persona, "--roles", "flipped", "--end-text", "###STOP###")


def test_openai_sdk_sync_and_async_with_n_and_seed(server):
    messages = [{"role": "system", "content": INTENT}]
    sync = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    first = sync.chat.completions.create(model="persona", messages=messages, n=4, seed=11)
    texts = [c.message.content for c in first.choices]
    assert len(texts) == 4 and set(texts) <= OPENINGS and [c.index for c in first.choices] == [0, 1, 2, 3]

    async def twice() -> list[list[str]]:
        async with openai.AsyncOpenAI(base_url=server, api_key="unused", max_retries=0) as client:
            responses = await asyncio.gather(
                *(client.chat.completions.create(model="persona", messages=messages, n=4, seed=s) for s in (11, 12))
            )
            return [[c.message.content for c in r.choices] for r in responses]

    same_seed, other_seed = asyncio.run(twice())
    assert same_seed == texts  # the same seed draws the same turns, whichever requests shared the batch
    assert set(other_seed) <= OPENINGS and other_seed != texts


def test_litellm_openai_route_as_tau2_bench_calls_it(tau2_server):
    litellm = import_litellm()  # offline, as the project imports it

    # tau2-bench's user simulator: its own system prompt, the roles flipped (the agent is "user").
    messages = [{"role": "system", "content": INTENT}, {"role": "user", "content": "Hi! How can I help you today?"}]
    response = litellm.completion(
        model="openai/persona", api_base=tau2_server, api_key="unused", messages=messages, seed=3
    )
    assert response.choices[0].message.content in OPENINGS and response.choices[0].finish_reason == "stop"
    messages += [
        {"role": "assistant", "content": "Please help me now"},
        {"role": "user", "content": "Sure, with what?"},
        {"role": "assistant", "content": "Hello there now"},
        {"role": "user", "content": "Anything else?"},
    ]
    left = litellm.completion(model="openai/persona", api_base=tau2_server, api_key="unused", messages=messages)
    # tau2-bench ends the conversation when "###STOP###" is in the user's message.
    assert "###STOP###" in left.choices[0].message.content and left.choices[0].finish_reason == "stop"


def test_deepeval_conversation_simulator_with_the_served_user(server):
    from deepeval.conversation_simulator import ConversationSimulator

    from userlm.infer.deepeval_adapter import ServedUser

    seen: list[list[dict]] = []

    async def assistant(user_input: str, conversation_history=None) -> str:
        seen.append(user_input)
        return "Sure, what do you need?"

    simulator = ConversationSimulator(
        user_intentions={INTENT: 2},
        user_profiles=["Writes short, polite messages."],
        simulator_model=ServedUser(base_url=server, model="persona", seed=0),
    )
    cases = simulator.simulate(model_callback=assistant, min_turns=6, max_turns=6, stopping_criteria="the user leaves")
    assert len(cases) == 2
    for case in cases:
        # Two user turns, then the simulated user left: DeepEval stopped before its sixth turn.
        inputs = [turn.input for turn in case.turns]
        assert len(inputs) == 2 and set(inputs) <= OPENINGS
        assert all(turn.actual_output == "Sure, what do you need?" for turn in case.turns)
    assert len(seen) == 4 and END_MARKER not in "".join(seen)

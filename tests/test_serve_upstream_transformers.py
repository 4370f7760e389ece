"""`userlm serve` in front of an upstream server: a real `transformers serve` (the default
`--simulator-server`) on loopback, of a programmed persona like the one the other serve tests
serve in-process. The protocol's answers come back through the upstream: opening turns, the
guardrails' early-end redraw, leaving with the end marker (which `transformers serve` strips as
a special token, so the completions backend must find it again), seeds and the end text.

`transformers serve` cannot ban a token, so a too-early end is redrawn rather than prevented:
this persona ends a third of its drafts (the in-process tests' persona, which ends nearly all of
them, would exhaust the redraws here)."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import SERVED_INTENT as INTENT
from tests.conftest import SERVED_OPENINGS as OPENINGS
from tests.conftest import make_programmed_simulator, serve, stop
from userlm.flipped.format import END_MARKER


@pytest.fixture(scope="module")
def persona(tmp_path_factory, default_tokenizer):
    """Opens with the end marker or one of the two openings, alike; after a word, finishes its turn."""
    eot = "<|im_end|>"
    start = {END_MARKER: 30, "Please": 30, "Hello": 30}
    transitions = {
        END_MARKER: {eot: 30},
        "Please": {" help": 30},
        " help": {" me": 30},
        " me": {" now": 30},
        " now": {eot: 30},
        "Hello": {" there": 30},
        " there": {" now": 30},
    }
    return make_programmed_simulator(
        tmp_path_factory.mktemp("upstream") / "persona", default_tokenizer, start, transitions
    )


@pytest.fixture(scope="module")
def upstream(persona):
    """A real `transformers serve` of the persona; yields its base URL (…/v1)."""
    process, url = serve(persona, persona.parent / "serve.log")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def client(userlm_server, persona, upstream):
    server = userlm_server(
        persona,
        "--simulator-endpoint",
        upstream,
        "--simulator-model",
        str(persona),  # `transformers serve` names a model by the folder it loads
        "--simulator-server",
        "transformers",
    )
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0)


def conversation(*turns: str) -> list[dict]:
    roles = ("user", "assistant")
    return [{"role": "system", "content": INTENT}, *({"role": roles[i % 2], "content": t} for i, t in enumerate(turns))]


def test_opening_turns_come_through_the_upstream_with_the_guardrails_on(client):
    assert [m.id for m in client.models.list().data] == ["persona"]
    response = client.chat.completions.create(model="persona", messages=conversation(), n=4, seed=5)
    texts = [choice.message.content for choice in response.choices]
    # The persona wants to leave at once; too early, so every draft that ended was redrawn.
    print("DEBUG", [c.model_extra for c in response.choices])
    assert set(texts) <= OPENINGS and not any(c.model_extra["userlm"]["ended"] for c in response.choices)
    again = client.chat.completions.create(model="persona", messages=conversation(), n=4, seed=5)
    assert [choice.message.content for choice in again.choices] == texts  # seeds reach the upstream


def test_leaving_through_the_upstream_is_the_end_marker_or_the_end_text(client):
    def replies(messages, **extra_body) -> list[tuple[str, dict]]:
        response = client.chat.completions.create(
            model="persona", messages=messages, n=8, seed=1, extra_body=extra_body
        )
        return [(choice.message.content, choice.model_extra["userlm"]) for choice in response.choices]

    # Two user turns in: leaving is allowed, so about a third of the turns are the end marker.
    # (Turns unlike its openings, which the repetition guardrail would otherwise redraw.)
    later = conversation("I need a recipe", "Sure, which one?", "Something quick", "Go on.")
    turns = replies(later)
    left = [extra for text, extra in turns if text == END_MARKER]
    assert left and all(extra["ended"] and extra["reason"] == "user_ended" for extra in left)
    assert all(text in OPENINGS and not extra["ended"] for text, extra in turns if text != END_MARKER)
    # The end text harnesses listen for, per request, in place of the marker: the same draws.
    stopped = replies(later, end_text="###STOP###")
    assert [text for text, _ in stopped] == [("###STOP###" if text == END_MARKER else text) for text, _ in turns]
    # Guardrails off per request: leaving at the first turn is allowed too.
    eager = replies(conversation(), guardrails=False)
    assert any(text == END_MARKER and extra["ended"] for text, extra in eager)

"""`userlm serve` on loopback, as a real subprocess, through the real `openai` SDK and raw HTTP:
the protocol (natural and flipped roles, leaving, guardrails and their overrides, n, seed,
temperature, top_p, max_tokens, stop, streaming, completions), OpenAI-style errors after
which it keeps serving, and dynamic batching."""

from __future__ import annotations

import asyncio
import http.client

import httpx
import openai
import pytest

from tests.conftest import SERVED_INTENT as INTENT
from tests.conftest import SERVED_OPENINGS as OPENINGS
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import CHATML, render
from userlm.infer.serve.engine import BATCHING_STATS

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(userlm_server, served_persona):
    return userlm_server(
        served_persona, "--api-key-env", "USERLM_TEST_KEY", "--max-request-mb", "2", env={"USERLM_TEST_KEY": KEY}
    )


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)


def conversation(*turns: str) -> list[dict]:
    roles = ("user", "assistant")
    return [{"role": "system", "content": INTENT}, *({"role": roles[i % 2], "content": t} for i, t in enumerate(turns))]


def extra(choice) -> dict:
    return choice.model_extra["userlm"]


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["persona"]
    health = httpx.get(server.replace("/v1", "/health")).json()
    assert health["status"] == "ok" and health["model"] == "persona"
    # Before any generation (the first test to ask): every batching counter is there, at 0.
    assert {key: health[key] for key in BATCHING_STATS} == dict.fromkeys(BATCHING_STATS, 0)


def test_the_reply_is_the_next_user_turn_and_leaving_is_explicit(client):
    first = client.chat.completions.create(model="persona", messages=conversation(), seed=1)
    [choice] = first.choices
    assert choice.message.role == "assistant" and choice.message.content in OPENINGS and choice.finish_reason == "stop"
    # The guardrails are on by default: the early end marker was redrawn, and said so.
    assert not extra(choice)["ended"] and extra(choice)["guardrail_events"][0]["guardrail"] == "end_too_early"
    later = conversation("Please help me now", "Sure, with what?", "Hello there now", "Go on.")
    [left] = client.chat.completions.create(model="persona", messages=later, seed=1).choices
    assert (left.message.content, left.finish_reason) == (END_MARKER, "stop")
    assert extra(left) == {**extra(left), "ended": True, "reason": "user_ended"}
    # The end text harnesses listen for, per request (the server's --end-text sets the default).
    [stop] = client.chat.completions.create(
        model="persona", messages=later, extra_body={"end_text": "###STOP###"}
    ).choices
    assert stop.message.content == "###STOP###"


def test_guardrails_can_be_changed_per_request(client):
    for override in (False, {"min_turns_before_end": 0}):
        [choice] = client.chat.completions.create(
            model="persona", messages=conversation(), extra_body={"guardrails": override}
        ).choices
        assert choice.message.content == END_MARKER and extra(choice)["ended"]
    with pytest.raises(
        openai.BadRequestError, match="Unknown key `min_wrds` in the request's guardrails; did you mean `min_words`"
    ):
        client.chat.completions.create(
            model="persona", messages=conversation(), extra_body={"guardrails": {"min_wrds": 3}}
        )


def test_flipped_roles_are_swapped_back(client):
    # As prompted user simulators are called: the agent speaks as "user", the simulated user as "assistant".
    flipped = [{"role": "system", "content": INTENT}, {"role": "user", "content": "Hi! How can I help you today?"}]
    [choice] = client.chat.completions.create(
        model="persona", messages=flipped, seed=2, extra_body={"roles": "flipped"}
    ).choices
    assert choice.message.content in OPENINGS
    with pytest.raises(openai.BadRequestError, match="ends with a user turn.*send roles=flipped"):
        client.chat.completions.create(model="persona", messages=flipped)
    # Two turns of the simulated user already (as "assistant"): it may leave now.
    history = [
        *flipped,
        {"role": "assistant", "content": "Please help me now"},
        {"role": "user", "content": "Sure."},
        {"role": "assistant", "content": "Hello there now"},
        {"role": "user", "content": "Anything else?"},
    ]
    [left] = client.chat.completions.create(model="persona", messages=history, extra_body={"roles": "flipped"}).choices
    assert extra(left)["ended"]


def test_n_seed_temperature_top_p_max_tokens_and_stop(client):
    def contents(**params) -> list[str]:
        response = client.chat.completions.create(model="persona", messages=conversation(), **params)
        return [c.message.content for c in response.choices]

    drawn = contents(n=6, seed=7)
    assert len(drawn) == 6 and set(drawn) == OPENINGS and contents(n=6, seed=7) == drawn
    # Greedy, or a nucleus of one token: the same turn whatever the seed.
    assert len(set(contents(n=3, temperature=0))) == 1 and contents(temperature=0, seed=1) == contents(
        temperature=0, seed=2
    )
    assert len(set(contents(n=4, top_p=0.01, seed=3))) == 1
    no_end = {"guardrails": {"min_turns_before_end": "never", "min_words": None}}
    [short] = client.chat.completions.create(
        model="persona", messages=conversation(), max_tokens=2, seed=1, extra_body=no_end
    ).choices
    assert short.message.content in {"Please help", "Hello there"} and short.finish_reason == "length"
    [cut] = client.chat.completions.create(
        model="persona", messages=conversation(), stop=[" me", " there"], seed=1, extra_body=no_end
    ).choices
    assert cut.message.content in {"Please help", "Hello"} and cut.finish_reason == "stop"


def test_streaming(client):
    stream = client.chat.completions.create(
        model="persona", messages=conversation(), seed=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in OPENINGS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens > 0
    [whole] = client.chat.completions.create(model="persona", messages=conversation(), seed=4).choices
    assert whole.message.content == text


def test_completions_take_the_rendered_flipped_prompt(client, default_tokenizer):
    prompts = [
        render(default_tokenizer, CHATML, conversation()),
        render(default_tokenizer, CHATML, conversation("a b c", "x", "d e f", "y")),
    ]
    response = client.completions.create(model="persona", prompt=prompts, n=2, seed=5)
    texts = [c.text for c in response.choices]
    assert len(texts) == 4 and set(texts[:2]) <= OPENINGS and texts[2:] == [END_MARKER] * 2
    with pytest.raises(openai.BadRequestError, match="not a flipped prompt rendered with the chatml template"):
        client.completions.create(model="persona", prompt="hello")


def test_errors_are_openai_errors_and_the_server_keeps_serving(server, client):
    def post(body, key: str | None = KEY, content=None) -> httpx.Response:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        return httpx.post(f"{server}/chat/completions", headers=headers, timeout=60, json=body, content=content)

    good = {"model": "persona", "messages": conversation()}
    cases = [
        (post(None, content=b"{not json"), 400, "not valid JSON"),
        (post({"model": "persona"}), 400, "`messages`: Field required"),
        (post({**good, "n": 0}), 400, "`n`: Input should be greater than or equal to 1"),
        (
            post({**good, "model": "gpt-4o"}),
            404,
            "The model 'gpt-4o' is not served here; this server serves 'persona'.",
        ),
        (post(good, key="wrong"), 401, "The API key is missing or wrong"),
        (post(good, key=None), 401, "The API key is missing or wrong"),
        # The key is checked before the body is read: without it, not even a malformed body gets looked at.
        (post(None, key="wrong", content=b"{not json"), 401, "The API key is missing or wrong"),
        (post({**good, "messages": conversation("word " * 5000, "ok")}), 400, "The conversation is 5,0"),
        # 1 MB of content: refused up front, with the sentence, before any generation.
        (
            post({**good, "messages": conversation("x " * 500_000, "ok")}),
            400,
            "tokens and the simulator's context is 4,096",
        ),
        # Over the server's --max-request-mb, declared or sent in chunks without a
        # length: refused before it is read whole.
        (oversized(server, declared=True), 413, "The request is larger than 2 MB"),
        (oversized(server, declared=False), 413, "The request is larger than 2 MB"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert message in error["message"] and error["type"] and "Traceback" not in response.text
        assert error["message"].count(". ") == 0  # one sentence
    assert cases[3][0].json()["error"]["code"] == "model_not_found"
    assert cases[7][0].json()["error"]["code"] == "context_length_exceeded"
    assert (
        client.chat.completions.create(model="persona", messages=conversation()).choices[0].message.content in OPENINGS
    )


def oversized(server: str, *, declared: bool) -> httpx.Response:
    """A body over 2 MB, announced by its Content-Length (and never sent) or sent in chunks without
    one; written with the standard library's HTTP client, which can read the refusal without first
    sending a whole body that the server is not going to read."""
    url = httpx.URL(server)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=60)
    connection.putrequest("POST", f"{url.path}/chat/completions")
    connection.putheader("Authorization", f"Bearer {KEY}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader(*(("Content-Length", "3000000") if declared else ("Transfer-Encoding", "chunked")))
    connection.endheaders()
    if not declared:
        # One byte over: the server reads all of it before refusing, so nothing unread cuts the connection short.
        for size in (1_000_000, 1_000_001):
            connection.send(b"%x\r\n%s\r\n" % (size, b" " * size))
    answer = connection.getresponse()
    response = httpx.Response(answer.status, content=answer.read())
    connection.close()
    return response


def test_concurrent_requests_share_generate_calls(server):
    health = server.replace("/v1", "/health")
    before = httpx.get(health).json()

    async def many() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server, api_key=KEY, max_retries=0) as aclient:
            calls = [
                aclient.chat.completions.create(model="persona", messages=conversation(), seed=i) for i in range(16)
            ]
            return [r.choices[0].message.content for r in await asyncio.gather(*calls)]

    assert set(asyncio.run(many())) <= OPENINGS
    after = httpx.get(health).json()
    assert after["rows"] - before["rows"] == 16
    # Sixteen requests sent together: a few shared calls, not sixteen.
    assert after["generate_calls"] - before["generate_calls"] <= 4 and after["largest_batch"] >= 8


def test_the_serve_config_is_the_same_from_yaml_flags_and_key_value(tmp_path):
    from userlm.config import parse_config
    from userlm.errors import UserError
    from userlm.infer.serve.server import ServeConfig

    (tmp_path / "serve.yaml").write_text(
        "simulator: out/persona\nport: 9000\nend_text: '###STOP###'\nroles: flipped\nguardrails:\n  min_words: 2\n"
    )
    from_yaml = parse_config(ServeConfig, [str(tmp_path / "serve.yaml")], prog="userlm serve")
    from_flags = parse_config(
        ServeConfig,
        [
            "out/persona",
            "--port",
            "9000",
            "--end-text",
            "###STOP###",
            "--roles",
            "flipped",
            "--guardrails.min_words",
            "2",
        ],
        prog="userlm serve",
    )
    from_words = parse_config(
        ServeConfig,
        ["out/persona", "port=9000", "end_text=###STOP###", "roles=flipped", "guardrails.min_words=2"],
        prog="userlm serve",
    )
    assert from_yaml == from_flags == from_words
    assert (
        from_flags.host == "127.0.0.1"
        and from_flags.served_name() == "persona"
        and from_flags.guardrails.min_words == 2
    )
    with pytest.raises(UserError, match="`roles`"):
        parse_config(ServeConfig, ["out/persona", "--roles", "swapped"], prog="userlm serve")

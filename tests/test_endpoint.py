"""EndpointClient against small real HTTP servers on loopback (a failing, a hanging and a
key-checking one), a closed port, and the real `transformers serve`."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from userlm.endpoint import Endpoint, EndpointClient, EndpointError, run_with_endpoint

MESSAGES = [{"role": "user", "content": "hi"}]


def chat_body(text: str) -> bytes:
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }
    ).encode()


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 whose answer to each POST is `respond(n, request)`,
    n counting from 0; it returns (status, body) or None to hang until the test ends."""

    def __init__(self, respond):
        self.requests: list[dict] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = {"path": self.path, "body": body, "authorization": self.headers.get("Authorization")}
                server.requests.append(request)
                answer = respond(len(server.requests) - 1, request)
                if answer is None:
                    server.release.wait(30)
                    return
                status, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback_server():
    servers = []

    def start(respond) -> LoopbackServer:
        servers.append(LoopbackServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def chat_once(endpoint: Endpoint, messages=MESSAGES, **params) -> str:
    async def go():
        async with EndpointClient(endpoint) as client:
            return await client.chat(messages, **params)

    return asyncio.run(go())


def assert_one_sentence(message: str, host: str) -> None:
    assert host in message
    assert "\n" not in message and message.endswith(".")
    assert message.count(". ") == 0, message


def test_retries_after_server_errors_then_succeeds(loopback_server):
    server = loopback_server(lambda n, request: (500, b'{"error": "boom"}') if n < 2 else (200, chat_body("hello")))
    endpoint = Endpoint(base_url=server.url, model="m", max_retries=3, timeout=10)
    assert chat_once(endpoint) == "hello"
    assert len(server.requests) == 3
    assert all(r["path"] == "/v1/chat/completions" and r["body"]["model"] == "m" for r in server.requests)


def test_gives_up_after_retries_with_one_sentence(loopback_server):
    server = loopback_server(lambda n, request: (500, b'{"error": "boom"}'))
    endpoint = Endpoint(base_url=server.url, model="m", max_retries=1, timeout=10)
    with pytest.raises(EndpointError) as raised:
        chat_once(endpoint)
    assert len(server.requests) == 2  # the first try and one retry
    assert "HTTP 500" in str(raised.value) and "after 1 retry" in str(raised.value)
    assert_one_sentence(str(raised.value), server.url.split("/")[2])


def test_times_out_against_a_hanging_server(loopback_server):
    server = loopback_server(lambda n, request: None)
    endpoint = Endpoint(base_url=server.url, model="m", max_retries=1, timeout=0.5)
    with pytest.raises(EndpointError) as raised:
        chat_once(endpoint)
    assert len(server.requests) == 2
    assert "did not answer within 0.5 s" in str(raised.value)
    assert_one_sentence(str(raised.value), server.url.split("/")[2])


def test_closed_port_is_one_sentence():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout=5)
    with pytest.raises(EndpointError) as raised:
        chat_once(endpoint)
    assert str(raised.value).startswith("Could not connect to the endpoint")
    assert_one_sentence(str(raised.value), f"127.0.0.1:{port}")


def test_key_comes_from_the_environment_and_is_never_in_errors(loopback_server, monkeypatch):
    monkeypatch.setenv("USERLM_TEST_KEY", "sk-secret-123")
    server = loopback_server(lambda n, request: (401, b'{"error": {"message": "bad key sk-secret-123"}}'))
    endpoint = Endpoint(base_url=server.url, model="m", api_key_env="USERLM_TEST_KEY", max_retries=0)
    with pytest.raises(EndpointError) as raised:
        chat_once(endpoint)
    assert server.requests[0]["authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in str(raised.value) and "USERLM_TEST_KEY" in str(raised.value)
    monkeypatch.delenv("USERLM_TEST_KEY")
    with pytest.raises(EndpointError):
        chat_once(endpoint)
    assert server.requests[1]["authorization"] == "Bearer EMPTY"


def test_run_with_endpoint_keeps_order_and_returns_failures_in_place(loopback_server):
    def respond(n, request):
        text = request["body"]["messages"][0]["content"]
        return (500, b"{}") if text == "bad" else (200, chat_body(text.upper()))

    server = loopback_server(respond)
    endpoint = Endpoint(base_url=server.url, model="m", max_retries=0, max_concurrency=2)

    async def work(client, text):
        return await client.chat([{"role": "user", "content": text}])

    results = run_with_endpoint(endpoint, work, ["a", "bad", "c", "d"], progress=False)
    assert results[0] == "A" and results[2:] == ["C", "D"]
    assert isinstance(results[1], EndpointError)


def test_bounded_concurrency(loopback_server):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def respond(n, request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        threading.Event().wait(0.2)
        with lock:
            in_flight[0] -= 1
        return 200, chat_body("ok")

    server = loopback_server(respond)
    endpoint = Endpoint(base_url=server.url, model="m", max_retries=0, max_concurrency=2)

    async def work(client, i):
        return await client.chat(MESSAGES)

    assert run_with_endpoint(endpoint, work, range(6), progress=False) == ["ok"] * 6
    assert peak[0] == 2


def test_real_transformers_serve_chat_and_complete(
    transformers_server, default_model_dir, default_tokenizer, default_model_and_tokenizer
):
    endpoint = Endpoint(base_url=transformers_server, model=str(default_model_dir), timeout=300)
    chat = [{"role": "user", "content": "Say hello."}]
    prompt = "The capital of France is"

    async def go():
        async with EndpointClient(endpoint) as client:
            text = await client.chat(chat, max_tokens=4, temperature=0.0)
            choice = await client.complete(prompt, max_tokens=3, temperature=0.0)
            return text, choice

    text, choice = asyncio.run(go())
    # Greedy decoding: each answer is the model's own continuation, computed here without the server.
    model, _ = default_model_and_tokenizer

    def greedy(input_ids, max_new_tokens: int) -> str:
        output = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False)
        return default_tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)

    chat_ids = default_tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    assert text.strip() and choice.text.strip()
    assert text == greedy(chat_ids, 4)
    assert choice.text == greedy(default_tokenizer(prompt, return_tensors="pt")["input_ids"], 3)

"""`userlm serve` of the real SmolLM2 default (no key) under faults: clients that leave mid-request,
64 requests at once; it keeps serving and says what it did in /health."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

INTENT = "You are a user chatting with an assistant language model to plan a garden."


@pytest.fixture(scope="module")
def server(userlm_server):
    return userlm_server("default")


def chat(server: str, timeout: float, **body) -> httpx.Response:
    request = {"model": "default", "messages": [{"role": "system", "content": INTENT}], "guardrails": False, **body}
    return httpx.post(f"{server}/chat/completions", json=request, timeout=timeout)


def test_clients_that_leave_mid_request(server):
    health = server.replace("/v1", "/health")
    before = httpx.get(health).json()
    gone = []

    def leave(timeout: float, **body) -> None:
        try:
            chat(server, timeout, **body)
        except httpx.TimeoutException:
            gone.append(timeout)

    # A long request whose client leaves while its batch generates, and one queued behind it
    # whose client leaves before its batch starts: that one is dropped, never generated.
    running = threading.Thread(target=leave, args=(1.0,), kwargs={"n": 16, "max_tokens": 48, "seed": 1})
    running.start()
    time.sleep(0.3)
    leave(0.4, max_tokens=8, seed=2)
    running.join()
    assert sorted(gone) == [0.4, 1.0]
    answered = chat(server, 120, max_tokens=8, seed=3)
    assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"]
    after = httpx.get(health).json()
    assert after["abandoned_requests"] - before.get("abandoned_requests", 0) == 1
    # The queued request's row was never generated; the running one's 16 and the last one's were.
    assert after["rows"] - before.get("rows", 0) == 17


def test_sixty_four_requests_at_once(server):
    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            body = {"model": "default", "messages": [{"role": "system", "content": INTENT}], "max_tokens": 8}
            return await asyncio.gather(
                *(client.post(f"{server}/chat/completions", json={**body, "seed": i}) for i in range(64))
            )

    health = server.replace("/v1", "/health")
    before = httpx.get(health).json()
    responses = asyncio.run(all_at_once())
    assert [r.status_code for r in responses] == [200] * 64
    assert all(r.json()["choices"][0]["message"]["content"] for r in responses)
    after = httpx.get(health).json()
    calls = after["generate_calls"] - before.get("generate_calls", 0)
    # At most 32 rows a call (the default max_batch_size): two calls, or a few more as requests trickle in.
    assert after["rows"] - before.get("rows", 0) == 64 and 2 <= calls <= 8 and after["largest_batch"] <= 32

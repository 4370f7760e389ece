"""LLM intents from a fleet: `--intent-endpoint URL_A,URL_B` spreads the requests over two real
loopback `transformers serve` servers through LiteLLM's Router, and a dead server in the list
costs nothing but a retry on the other one.

The test is about routing, not about intents' quality, so the servers serve conftest's
`intent_writer`, a tiny programmed Llama that answers "Plan a trip." to any prompt: the
servers start and answer in a fraction of what two SmolLM2 servers take. Each server sits behind
a real counting HTTP proxy (the one test_prep_llm_intents.py uses), so the test sees which server
each request reached.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep

sys.path.insert(0, str(Path(__file__).parent))
from conftest import INTENT_WRITER_INTENT as INTENT  # noqa: E402
from conftest import free_port, serve, stop  # noqa: E402
from test_prep_llm_intents import TOPICS, CountingProxy  # noqa: E402


@pytest.fixture(scope="module")
def two_servers(intent_writer, tmp_path_factory):
    """Two real servers of the intent writer, each behind its own counting proxy."""
    folder = tmp_path_factory.mktemp("fleet-logs")
    with ThreadPoolExecutor(2) as pool:  # the two start side by side
        starting = [pool.submit(serve, intent_writer, folder / f"serve-{i}.log") for i in range(2)]
    started = [future.result() for future in starting if future.exception() is None]
    try:
        for future in starting:
            future.result()  # raise the first start's failure, the other server stopped below
        proxies = [CountingProxy(url) for _, url in started]
        yield proxies
        for proxy in proxies:
            proxy.close()
    finally:
        for process, _ in started:
            stop(process)


@pytest.fixture
def logs(tmp_path) -> Path:
    path = tmp_path / "logs.jsonl"
    rows = [
        {"id": f"c{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for i, (q, a) in enumerate(TOPICS[:4])
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(logs: Path, out: Path, endpoints: list[str], model: Path):
    return prep(
        PrepConfig(
            inputs=[logs],
            out=out,
            languages=None,
            intents="llm",
            intent_endpoint=endpoints,
            intent_model=str(model),
            endpoint_timeout=600.0,
            endpoint_concurrency=1,
            progress=False,
        )
    )


def test_requests_spread_over_both_servers(two_servers, logs, tmp_path, intent_writer):
    first, second = two_servers
    before = first.chat_requests, second.chat_requests
    result = run(logs, tmp_path / "out", [first.url, second.url], intent_writer)
    assert result.stats["kept"] == 4 and result.stats["rejected"] == {}
    # One request in flight per server: least-busy routing sends the second to the idle server.
    got = first.chat_requests - before[0], second.chat_requests - before[1]
    assert sum(got) == 4 and min(got) >= 1, got
    intents = [json.loads(line) for line in (tmp_path / "out" / "conversations.jsonl").read_text().splitlines()]
    assert {record["intent_source"] for record in intents} == {f"llm:{intent_writer}"}
    assert {record["intent"] for record in intents} == {INTENT}


def test_a_dead_server_in_the_fleet_costs_a_retry_not_an_intent(two_servers, logs, tmp_path, intent_writer):
    alive = two_servers[0]
    before = alive.chat_requests
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = run(logs, tmp_path / "out", [dead, alive.url], intent_writer)
    assert result.stats["kept"] == 4 and result.stats["rejected"] == {}
    assert alive.chat_requests - before == 4

"""A prep with LLM personas and LLM intents, killed while it is asking the endpoint, resumes with the
same command: it asks only what its caches lack and writes what an uninterrupted run writes.

The endpoint is a real `transformers serve` of conftest's `intent_writer` (a tiny programmed Llama
whose one answer serves as profile and intent: the test is about the caches, not the answers'
quality) behind the real counting proxy of test_prep_llm_intents.py. The killed run is a
real `prep` in a child process that SIGKILLs itself right after the N-th answer is committed to a
cache. Profiles are all asked before intents, so one kill after the first intent answer finds the
persona cache full and the intent cache part-filled: the rerun must ask no profile and only the
missing intents. (A part-filled cache of either kind resumes through the same `llm_cache` code,
which test_prep_llm_intents.py kills mid-run.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep

sys.path.insert(0, str(Path(__file__).parent))
from conftest import INTENT_WRITER_INTENT, serve, stop  # noqa: E402
from test_prep_llm_intents import TOPICS, CountingProxy  # noqa: E402

CONVERSATIONS = 2  # one user each: 2 profile requests, then 2 intent requests

KILLER = """
import json, os, signal, sys
from userlm.data_prep import llm_cache
from userlm.data_prep.config import PrepConfig
from userlm.data_prep.pipeline import prep

nth, options = int(sys.argv[1]), json.loads(sys.argv[2])
original, calls = llm_cache.AnswerCache.put, [0]

def killed_after_the_nth_answer(self, *args):
    original(self, *args)
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)

llm_cache.AnswerCache.put = killed_after_the_nth_answer
if __name__ == "__main__":
    prep(PrepConfig(**options))
"""


@pytest.fixture(scope="module")
def proxy(intent_writer):
    process, url = serve(intent_writer, intent_writer.parent / "serve-resume.log")
    counting = CountingProxy(url)
    yield counting
    counting.close()
    stop(process)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "logs.jsonl"
    rows = [
        {"id": f"c{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for i, (q, a) in enumerate(TOPICS[:CONVERSATIONS])
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def options(logs: Path, out: Path, proxy: CountingProxy, model: Path) -> dict:
    return {
        "inputs": [str(logs)],
        "out": str(out),
        "languages": None,
        "intents": "llm",
        "personas": "llm",
        "intent_endpoint": [proxy.url],
        "intent_model": str(model),
        "endpoint_concurrency": 1,
        "endpoint_timeout": 600.0,
        "num_proc": 1,
        "progress": False,
    }


def outputs(out: Path) -> dict:
    files = {name: (out / name).read_bytes() for name in ("conversations.jsonl", "train.jsonl.gz", "test.jsonl.gz")}
    stats = json.loads((out / "stats.json").read_text().replace(str(out), "OUT"))
    stats.pop("run")
    stats["config"].pop("out")
    return {**files, "stats.json": stats}


@pytest.fixture(scope="module")
def reference(logs, proxy, intent_writer, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "out"
    before = proxy.chat_requests
    result = prep(PrepConfig(**options(logs, out, proxy, intent_writer)))
    assert result.stats["kept"] == CONVERSATIONS and result.stats["rejected"] == {}
    assert proxy.chat_requests - before == 2 * CONVERSATIONS
    records = [json.loads(line) for line in (out / "conversations.jsonl").read_text().splitlines()]
    assert all(r["intent"].startswith(INTENT_WRITER_INTENT) and r["persona"] == "Plan a trip." for r in records)
    return outputs(out)


def test_killed_while_asking_for_intents_resumes_from_both_caches(logs, proxy, intent_writer, reference, tmp_path):
    answers_before_the_kill = CONVERSATIONS + 1  # every profile and the first intent
    out = tmp_path / "out"
    config = options(logs, out, proxy, intent_writer)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(answers_before_the_kill), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()

    before = proxy.chat_requests
    result = prep(PrepConfig(**config))
    assert proxy.chat_requests - before == 2 * CONVERSATIONS - answers_before_the_kill  # nothing cached is asked again
    assert result.stats["run"]["resumed"] is True
    assert any("resumed the interrupted run" in note for note in result.notes)
    assert outputs(out) == reference
    # The finished output keeps both caches, so a later prep of other options asks nothing already answered.
    assert (out / "intent_cache.sqlite").exists() and (out / "persona_cache.sqlite").exists()

"""The `llm` intent source: prompt, post-processing, and the persistent cache against a real
`transformers serve` of conftest's `intent_writer`, a tiny programmed Llama that answers "Plan a
trip." (these tests are about plumbing, not the intents' quality).

Requests are counted by a real loopback HTTP proxy placed in front of the real server: it
sees every request that would reach the model, retries included, so a count of exactly the
uncached conversations proves that a resumed run asks only for what was not cached.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from userlm.data_prep.llm_intents import MAX_TURN_CHARS, clean_intent, intent_messages, llm_intents
from userlm.endpoint import Endpoint, EndpointError
from userlm.flipped.format import INTENT_PREFIX

TOPICS = [
    ("how do i center a div in css", "Use flexbox on the parent."),
    ("Write a haiku about autumn rain.", "Grey drops on red leaves..."),
    ("whats the capital of australia", "Canberra."),
    ("Can you explain what a mutex is?", "A mutex is a lock that lets one thread at a time..."),
    ("give me a recipe for pancakes", "Mix flour, milk and eggs..."),
    ("Translate 'good morning' into Spanish.", "Buenos días."),
    ("help me write an email asking for a day off", "Dear manager, ..."),
    ("Why is the sky blue?", "Because of Rayleigh scattering..."),
    ("suggest a name for my cat", "How about Miso?"),
    ("What is 17 times 23?", "391."),
    ("fix my python: print 'hi'", "In Python 3 use print('hi')."),
    ("Recommend a sci-fi book.", "Try 'The Left Hand of Darkness'."),
]


def conversations(n: int) -> list[dict]:
    return [
        {
            "conversation_id": f"c{i:02d}",
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "meta": {},
        }
        for i, (question, answer) in enumerate(TOPICS[:n])
    ]


class CountingProxy:
    """A real HTTP proxy on loopback that forwards to `target` and counts chat requests."""

    def __init__(self, target: str):
        self.chat_requests = 0
        proxy = self
        upstream = httpx.Client(timeout=600)
        root = target.rsplit("/v1", 1)[0]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.endswith("/chat/completions"):
                    proxy.chat_requests += 1
                answer = upstream.post(root + self.path, content=body, headers={"Content-Type": "application/json"})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def intent_server(intent_writer):
    """A real `transformers serve` of the intent writer; yields its base URL (…/v1)."""
    from tests.conftest import serve, stop

    process, url = serve(intent_writer, intent_writer.parent / "serve-intents.log")
    yield url
    stop(process)


@pytest.fixture
def counting_proxy(intent_server):
    proxy = CountingProxy(intent_server)
    yield proxy
    proxy.close()


def cached_answers(path: Path) -> dict[str, str]:
    """The cache's rows, read-only (safe while another process writes)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return dict(db.execute("SELECT key, answer FROM answers").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return {}


def test_prompt_has_the_papers_structure():
    long_turn = "word " * 1000
    record = {
        "conversation_id": "x",
        "messages": [{"role": "user", "content": long_turn}, {"role": "assistant", "content": "ok"}],
    }
    prompt = intent_messages(record)[0]["content"]
    assert f'begin with exactly: "{INTENT_PREFIX}"' in prompt
    assert prompt.count("Example ") == 3 and prompt.count(f"Intent: {INTENT_PREFIX}") == 3
    tail = prompt.split("Now the conversation to describe:")[1]
    assert "<user>: word word" in tail and "\n<assistant>: ok" in tail and "[...]" in tail
    assert len(tail.split("\n<assistant>")[0]) < MAX_TURN_CHARS + 100
    assert prompt.rstrip().endswith("Reply with only the intent, on one line, and nothing else.")


@pytest.mark.parametrize(
    ("reply", "intent", "repaired"),
    [
        (f"{INTENT_PREFIX} plan a trip.", f"{INTENT_PREFIX} plan a trip.", False),
        (f"Sure! Here it is: {INTENT_PREFIX} plan a trip\nmore chatter", f"{INTENT_PREFIX} plan a trip.", False),
        (
            f"Intent: {INTENT_PREFIX} plan a trip. Then book it. Then pack.",
            f"{INTENT_PREFIX} plan a trip. Then book it.",
            False,
        ),
        ("The user wants to plan a trip.", f"{INTENT_PREFIX} plan a trip.", True),
        ("Plan a trip to the sea", f"{INTENT_PREFIX} plan a trip to the sea.", True),
        ("SQL help for a report.", f"{INTENT_PREFIX} SQL help for a report.", True),
        ("", "", False),
        ("  \n\n", "", False),
        (f"{INTENT_PREFIX}", "", False),
        ("...", "", False),
    ],
)
def test_clean_intent(reply, intent, repaired):
    assert clean_intent(reply) == (intent, repaired)


def test_failures_are_returned_not_raised(tmp_path):
    endpoint = Endpoint(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout=5)
    results = llm_intents(conversations(2), endpoint, tmp_path / "c.sqlite", progress=False)
    assert all(isinstance(result, EndpointError) for result in results.values())
    assert cached_answers(tmp_path / "c.sqlite") == {}  # failures are not cached, so they are asked again


DRIVER = """
import json, os, signal, sys
from pathlib import Path
from userlm.data_prep import llm_cache
from userlm.data_prep.llm_intents import llm_intents
from userlm.endpoint import Endpoint

original, answers = llm_cache.AnswerCache.put, [0]

def killed_after_the_fourth_answer(self, *args):
    original(self, *args)
    answers[0] += 1
    if answers[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)

llm_cache.AnswerCache.put = killed_after_the_fourth_answer
records = json.loads(Path(sys.argv[1]).read_text())
endpoint = Endpoint(base_url=sys.argv[3], model=sys.argv[4], timeout=300, max_concurrency=2)
llm_intents(records, endpoint, Path(sys.argv[2]), progress=False, max_tokens=16)
"""


def test_killed_run_resumes_asking_only_for_uncached(tmp_path, intent_server, counting_proxy, intent_writer):
    records = conversations(12)
    (tmp_path / "records.json").write_text(json.dumps(records))
    cache = tmp_path / "intents.sqlite"
    # The killed run talks to the server directly and SIGKILLs itself right after its fourth answer
    # is committed (requests still in flight are lost); only the resumed run goes through the proxy.
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "records.json"), str(cache), intent_server, str(intent_writer)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert driver.returncode == -signal.SIGKILL, driver.stderr
    before = cached_answers(cache)
    assert len(before) == 4

    endpoint = Endpoint(base_url=counting_proxy.url, model=str(intent_writer), timeout=300, max_concurrency=2)
    resumed = llm_intents(records, endpoint, cache, progress=False, max_tokens=16)
    assert counting_proxy.chat_requests == 12 - len(before)
    after = cached_answers(cache)
    assert len(after) == 12
    assert all(after[key] == answer for key, answer in before.items())  # nothing finished was lost or redone
    # Every intent is one of the endpoint's answers, those cached before the kill included, cleaned.
    assert sorted(resumed.values()) == sorted(clean_intent(answer)[0] for answer in after.values()), resumed

    again = llm_intents(records, endpoint, cache, progress=False, max_tokens=16)
    assert again == resumed
    assert counting_proxy.chat_requests == 12 - len(before)  # a full second run asks nothing

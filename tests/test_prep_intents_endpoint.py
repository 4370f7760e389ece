"""`prep --intents llm` end to end against a real `transformers serve` of SmolLM2 on loopback:
intents come from the endpoint, land in OUT's cache, and a rerun needs no endpoint at all."""

from __future__ import annotations

import json
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

from userlm.data_prep.config import PrepConfig
from userlm.data_prep.llm_intents import clean_intent
from userlm.data_prep.pipeline import prep

FIXTURES = Path(__file__).parent / "fixtures" / "prep"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def intents_of(result) -> dict[str, tuple[str, str]]:
    rows = [json.loads(line) for line in Path(result.written["conversations"]).read_text().splitlines()]
    return {r["conversation_id"]: (r["intent"], r["intent_source"]) for r in rows}


def cached_answers(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return [answer for (answer,) in db.execute("SELECT answer FROM answers WHERE kind = 'intent'")]


def test_llm_intents_through_prep_and_resume_from_cache(tmp_path, transformers_server, default_model_dir):
    model = str(default_model_dir)
    # A generous timeout: CPU generation on a busy 2-core machine can take a minute a request.
    config = dict(
        inputs=[FIXTURES / "lmsys.jsonl"],
        out=tmp_path,
        intents="llm",
        intent_model=model,
        endpoint_timeout=600.0,
        endpoint_concurrency=2,
        progress=False,
        hf=False,
    )
    first = prep(PrepConfig(intent_endpoint=transformers_server, **config))
    assert first.stats["kept"] == 2 and first.stats["rejected"] == {}
    intents = intents_of(first)
    assert {source for _, source in intents.values()} == {f"llm:{model}"}
    # Each intent is the endpoint's own answer (as cached, one per conversation), cleaned.
    answers = cached_answers(tmp_path / "intent_cache.sqlite")
    assert len(answers) == 2
    assert sorted(intent for intent, _ in intents.values()) == sorted(clean_intent(answer)[0] for answer in answers)
    # Nothing listens on this port: the rerun can only succeed from the cache.
    dead = f"http://127.0.0.1:{free_port()}/v1"
    second = prep(PrepConfig(intent_endpoint=dead, **config))
    assert intents_of(second) == intents


def test_llm_intents_with_a_dead_endpoint_reject_instead_of_stopping(tmp_path, default_model_dir):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = prep(
        PrepConfig(
            inputs=[FIXTURES / "lmsys.jsonl"],
            out=tmp_path,
            intents="llm",
            intent_endpoint=dead,
            intent_model="m",
            progress=False,
            hf=False,
        )
    )
    assert result.stats["kept"] == 0 and result.stats["rejected"] == {"intent_failed": 2}
    rejected = [json.loads(line) for line in Path(result.written["rejected"]).read_text().splitlines()]
    assert {r["conversation_id"] for r in rejected} == {"lm-001", "lm-003"}
    assert all("Could not connect" in r["detail"] for r in rejected)

"""A persistent cache of LLM answers, so an interrupted run resumes without asking twice.

The key is a hash of the exact request (model, messages, sampling parameters): a different
conversation, model or prompt wording is a different key, and nothing needs a manual
"prompt version". sqlite3 (stdlib) commits each answer atomically and durably, so a run
killed at any moment loses at most the answers still in flight, never a finished one, and
never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from userlm.endpoint import Endpoint, EndpointClient, run_with_endpoint
from userlm.errors import UserError


def request_key(model: str, messages: list[dict], params: dict) -> str:
    """A stable hash of one chat request."""
    payload = json.dumps([model, messages, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """Answers by request key in one sqlite file; usable as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0)
            # synchronous=FULL: a commit is on disk before put() returns, even on power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, kind TEXT, answer TEXT)")
            self._db.commit()
        except sqlite3.DatabaseError as error:
            raise UserError(f"The LLM cache {self.path} cannot be opened ({error}); delete it or pass another cache path.") from error

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, kind: str, answer: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO answers (key, kind, answer) VALUES (?, ?, ?)", (key, kind, answer))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def cached_chats(endpoint: Endpoint, requests: dict, cache_path: Path, *, kind: str, params: dict, desc: str, progress: bool = True) -> tuple[dict, int]:
    """Each request's reply (or EndpointError), from the cache when there, else asked and cached at
    once; and how many were asked."""
    keys = {name: request_key(endpoint.model, messages, params) for name, messages in requests.items()}
    with AnswerCache(cache_path) as cache:
        replies = {name: cache.get(key) for name, key in keys.items()}
        missing = [name for name, reply in replies.items() if reply is None]

        async def ask(client: EndpointClient, name) -> str:
            reply = await client.chat(requests[name], **params)
            cache.put(keys[name], kind, reply)
            return reply

        replies.update(zip(missing, run_with_endpoint(endpoint, ask, missing, desc=desc, progress=progress)))
    return replies, len(missing)

"""A persistent cache of LLM answers, so an interrupted run resumes without asking twice,
and the streaming asker that fills it.

The key is a hash of the exact request (model, messages, sampling parameters): a different
conversation, model or prompt wording is a different key, and nothing needs a manual
"prompt version". sqlite3 (stdlib) commits each answer atomically as it arrives; in WAL
mode with synchronous=NORMAL a commit costs no fsync yet survives the process being
killed at any moment (only a power cut can lose the last answers, which are then asked
again), so a million answers do not wait on a million disk flushes. Failures are kept in
their own table with their message, for the rejection, and are asked again on a rerun.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from userlm.endpoint import EndpointError
from userlm.errors import UserError

from .fleet import open_client


def request_key(model: str, messages: list[dict], params: dict) -> str:
    """A stable hash of one chat request."""
    payload = json.dumps([model, messages, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """Answers (and the last failure) by request key in one sqlite file; a context manager."""

    def __init__(self, path: Path, *, read_only: bool = False):
        self.path = Path(path)
        try:
            if read_only:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, kind TEXT, answer TEXT)")
            self._db.execute("CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, kind TEXT, message TEXT)")
            self._db.commit()
        except sqlite3.DatabaseError as error:
            raise UserError(
                f"The LLM cache {self.path} cannot be opened ({error}); delete it or pass another cache path."
            ) from error

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def failure(self, key: str) -> str | None:
        """The message of the last failed request with this key, if it has no answer."""
        try:
            row = self._db.execute("SELECT message FROM failures WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a cache written before failures were kept
            return None
        return row[0] if row else None

    def put(self, key: str, kind: str, answer: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO answers (key, kind, answer) VALUES (?, ?, ?)", (key, kind, answer))
            self._db.execute("DELETE FROM failures WHERE key = ?", (key,))

    def put_failure(self, key: str, kind: str, message: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO failures (key, kind, message) VALUES (?, ?, ?)", (key, kind, message)
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def ask_missing(
    endpoint,
    requests: Iterable[tuple[str, list[dict]]],
    cache: AnswerCache,
    *,
    kind: str,
    params: dict,
    desc: str,
    progress: bool = True,
) -> dict:
    """Ask `endpoint` (an Endpoint or a Fleet) for every request whose key has no cached
    answer, committing each answer (or failure) as it arrives; `requests` is read lazily
    and at most twice the endpoint's concurrency are held at once, so memory stays flat
    however many there are. Returns how many were cached, asked and failed."""
    counts = {"cached": 0, "asked": 0, "failed": 0}

    async def run() -> None:
        async with open_client(endpoint) as client:
            window = 2 * client.concurrency
            pending: set[asyncio.Task] = set()

            async def ask(key: str, messages: list[dict]) -> None:
                try:
                    cache.put(key, kind, await client.chat(messages, **params))
                except EndpointError as error:
                    cache.put_failure(key, kind, str(error))
                    counts["failed"] += 1
                bar.update(1)

            with tqdm(desc=desc, unit="req", disable=not progress) as bar:
                for key, messages in requests:
                    if cache.get(key) is not None:
                        counts["cached"] += 1
                        continue
                    counts["asked"] += 1
                    pending.add(asyncio.ensure_future(ask(key, messages)))
                    if len(pending) >= window:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            task.result()  # anything but an EndpointError is a bug: let it out
                if pending:
                    for task in (await asyncio.wait(pending))[0]:
                        task.result()

    asyncio.run(run())
    return counts


def cached_chats(
    endpoint, requests: dict, cache_path: Path, *, kind: str, params: dict, desc: str, progress: bool = True
) -> tuple[dict, int]:
    """Each request's reply (or EndpointError), from the cache when there, else asked and cached at
    once; and how many were asked."""
    keys = {name: request_key(endpoint.model, messages, params) for name, messages in requests.items()}
    with AnswerCache(cache_path) as cache:
        counts = ask_missing(
            endpoint,
            ((keys[name], messages) for name, messages in requests.items()),
            cache,
            kind=kind,
            params=params,
            desc=desc,
            progress=progress,
        )
        replies = {}
        for name, key in keys.items():
            answer = cache.get(key)
            replies[name] = answer if answer is not None else EndpointError(cache.failure(key) or "no answer")
    return replies, counts["asked"]

"""An OpenAI-compatible endpoint (vLLM, `transformers serve`, llama.cpp, OpenAI): settings,
an async client with bounded concurrency, and one error type for when it gives up.

Every stage that talks to a served model goes through `EndpointClient`:

    endpoint = Endpoint(base_url="http://127.0.0.1:8000/v1", model="m", max_concurrency=4)
    async with EndpointClient(endpoint) as client:
        text = await client.chat([{"role": "user", "content": "hi"}], max_tokens=32)

Retries (exponential backoff on 5xx, 408/409/429, timeouts and connection errors) are the
`openai` client's own; the semaphore bounds how many requests are in flight at once. The
API key is read from the environment variable named by `api_key_env` and never logged.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import openai
from tqdm.auto import tqdm

from userlm.config import Config
from userlm.errors import UserError

T = TypeVar("T")
Item = TypeVar("Item")

# What to check, by HTTP status, in the one sentence an EndpointError carries.
STATUS_HINTS = {
    400: "check the request parameters the server accepts",
    401: "check the API key in the environment variable {env}",
    403: "check the API key in the environment variable {env} and its permissions",
    404: "check the base URL (it usually ends in /v1) and the model name {model!r}",
    422: "check the request parameters the server accepts",
    429: "the server is rate-limiting; lower the concurrency or try again later",
}


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach an OpenAI-compatible server."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 4
    max_concurrency: int = 8

    @property
    def host(self) -> str:
        """host:port of the base URL, for messages (never the key, never the full path)."""
        return urlparse(self.base_url).netloc or self.base_url


@dataclass(kw_only=True)
class EndpointOptions(Config):
    """The request keys of a config's endpoint (the assistant's, the suite judge's): one name, bound and help each."""

    timeout: float = field(default=60.0, metadata={"help": "seconds per endpoint request", "above": 0})
    max_retries: int = field(
        default=4, metadata={"help": "retries per endpoint request, with exponential backoff", "min": 0}
    )
    concurrency: int = field(default=8, metadata={"help": "endpoint requests in flight at once", "min": 1})

    def endpoint_at(self, base_url: str, model: str, api_key_env: str) -> Endpoint:
        return Endpoint(
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            timeout=self.timeout,
            max_retries=self.max_retries,
            max_concurrency=self.concurrency,
        )


class EndpointError(UserError):
    """The endpoint failed after all retries; the message is one sentence for the user."""


def describe_failure(endpoint: Endpoint, error: Exception) -> str:
    """One sentence: what failed (status code or cause), at which host, and what to check."""
    retries = endpoint.max_retries
    tries = f"after {retries} {'retry' if retries == 1 else 'retries'}" if retries else "with retries off"
    if isinstance(error, openai.APITimeoutError):
        return (
            f"The endpoint at {endpoint.host} did not answer within {endpoint.timeout:g} s {tries}; "
            "check that the server is not overloaded, or raise the timeout."
        )
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        words = str(cause).strip().splitlines()[0].rstrip(".")[:80] if cause is not None and str(cause).strip() else ""
        reason = words or (type(cause).__name__ if cause is not None else "connection error")
        return (
            f"Could not connect to the endpoint at {endpoint.host} {tries} ({reason}); "
            "check that the server is running and that the base URL is right."
        )
    if isinstance(error, openai.APIStatusError):
        hint = STATUS_HINTS.get(error.status_code, "check the server's log")
        hint = hint.format(env=endpoint.api_key_env, model=endpoint.model)
        retried = error.status_code in (408, 409, 429) or error.status_code >= 500  # what openai retries
        return (
            f"The endpoint at {endpoint.host} answered HTTP "
            f"{error.status_code}{' ' + tries if retried else ''}; {hint}."
        )
    return (
        f"The endpoint at {endpoint.host} sent an answer that could not be read "
        f"({type(error).__name__}); check that it is OpenAI-compatible."
    )


class EndpointClient:
    """An async client for one Endpoint; use `async with`, or call `aclose()` when done.

    Create it inside the event loop that will use it (the underlying HTTP pool is bound to
    the loop that first uses it).
    """

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=os.environ.get(endpoint.api_key_env) or "EMPTY",
            timeout=endpoint.timeout,
            max_retries=endpoint.max_retries,
        )
        self._semaphore = asyncio.Semaphore(endpoint.max_concurrency)

    async def chat(self, messages: list[dict], **params: Any) -> str:
        """The assistant message's text for a chat request (extra params go to the server)."""
        async with self._semaphore:
            try:
                response = await self._client.chat.completions.create(
                    model=self.endpoint.model, messages=messages, **params
                )
            except openai.OpenAIError as error:
                raise EndpointError(describe_failure(self.endpoint, error)) from error
        if not response.choices:
            raise EndpointError(describe_failure(self.endpoint, ValueError("no choices")))
        return response.choices[0].message.content or ""

    async def complete(self, prompt: str, **params: Any):
        """The first choice (`text`, `finish_reason`, `logprobs`) of a raw completions request."""
        async with self._semaphore:
            try:
                response = await self._client.completions.create(model=self.endpoint.model, prompt=prompt, **params)
            except openai.OpenAIError as error:
                raise EndpointError(describe_failure(self.endpoint, error)) from error
        if not response.choices:
            raise EndpointError(describe_failure(self.endpoint, ValueError("no choices")))
        return response.choices[0]

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> EndpointClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


def run_with_endpoint(
    endpoint: Endpoint,
    work: Callable[[EndpointClient, Item], Awaitable[T]],
    items: Sequence[Item],
    *,
    desc: str = "requests",
    progress: bool = True,
) -> list[T | EndpointError]:
    """Run `await work(client, item)` for every item concurrently (bounded by the endpoint's
    `max_concurrency`), with a tqdm bar; results in item order.

    An EndpointError from one item is returned in that item's place instead of raised, so
    one failed request never loses the others; any other exception propagates. Call it from
    synchronous code only (it runs its own event loop).
    """

    async def run_all() -> list[T | EndpointError]:
        async with EndpointClient(endpoint) as client:

            async def one(item: Item) -> T | EndpointError:
                try:
                    return await work(client, item)
                except EndpointError as error:
                    return error

            tasks = [asyncio.ensure_future(one(item)) for item in items]
            with tqdm(total=len(tasks), desc=desc, unit="req", disable=not progress) as bar:
                for finished in asyncio.as_completed(tasks):
                    await finished
                    bar.update(1)
            return [task.result() for task in tasks]

    return asyncio.run(run_all())

"""Several OpenAI-compatible servers behind one intent (or persona) endpoint.

At corpus scale intents come from a fleet of inference servers. `--intent-endpoint` takes
one base URL or several (`http://a:8000/v1,http://b:8000/v1`): with several, requests go
through LiteLLM's `Router` in this process, which spreads them over the servers (each
request to the server with the fewest requests in flight, its `least-busy` routing, so a
faster server takes more), retries a failed request on another server and rests a server
that failed for a while (its cooldown), so a dead server costs one retry per minute.
LiteLLM is the existing tool for this, so there is no balancer of our own; a fleet shared
by several jobs can instead sit behind LiteLLM's proxy (`litellm --config fleet.yaml`),
whose one URL is then the endpoint (docs/guide/prep.md).

`open_client(endpoint)` gives the same small client (`chat(messages, **params)`, raising
`EndpointError` with one sentence) for an `Endpoint` (one server, `userlm.endpoint`) or a
`Fleet`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from userlm.endpoint import Endpoint, EndpointClient, EndpointError
from userlm.errors import UserError

FLEET_MODEL = "userlm-fleet"  # the Router's name for the group of servers
COOLDOWN_SECONDS = 60


@dataclass(frozen=True)
class Fleet:
    base_urls: tuple[str, ...]
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 4
    max_concurrency: int = 8  # per server

    @property
    def host(self) -> str:
        return ", ".join(urlparse(url).netloc or url for url in self.base_urls)


def endpoint_of(urls: list[str], model: str, *, timeout: float, concurrency: int) -> Endpoint | Fleet:
    """An Endpoint for one URL, a Fleet for several."""
    if len(urls) == 1:
        return Endpoint(base_url=urls[0], model=model, timeout=timeout, max_concurrency=concurrency)
    return Fleet(base_urls=tuple(urls), model=model, timeout=timeout, max_concurrency=concurrency)


def import_litellm():
    """LiteLLM, imported offline: the project's one import of it."""
    # Unless told to read its bundled copy, LiteLLM fetches its model cost map over the network on import:
    # about 7 s and retry warnings on a machine without internet. A user's own setting wins.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise UserError(
            "Several endpoint URLs are spread over with LiteLLM; install it (pip install litellm) or give one URL."
        ) from None
    return litellm


class FleetClient:
    def __init__(self, fleet: Fleet):
        litellm = import_litellm()
        litellm.suppress_debug_info = True
        logging.getLogger("LiteLLM").setLevel(logging.ERROR)
        logging.getLogger("LiteLLM Router").setLevel(logging.ERROR)
        self.fleet = fleet
        self.concurrency = fleet.max_concurrency * len(fleet.base_urls)
        key = os.environ.get(fleet.api_key_env) or "EMPTY"
        self.router = litellm.Router(
            model_list=[
                {
                    "model_name": FLEET_MODEL,
                    "litellm_params": {"model": f"openai/{fleet.model}", "api_base": url, "api_key": key},
                }
                for url in fleet.base_urls
            ],
            routing_strategy="least-busy",
            num_retries=fleet.max_retries,
            timeout=fleet.timeout,
            retry_after=0,
            allowed_fails=0,
            cooldown_time=COOLDOWN_SECONDS,
        )
        self._semaphore = asyncio.Semaphore(self.concurrency)

    async def chat(self, messages: list[dict], **params: Any) -> str:
        async with self._semaphore:
            try:
                response = await self.router.acompletion(model=FLEET_MODEL, messages=messages, **params)
            except Exception as error:  # LiteLLM raises its own types (openai's subclasses) and others
                first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
                raise EndpointError(
                    f"None of the servers at {self.fleet.host} answered after "
                    f"{self.fleet.max_retries} retries ({first}); "
                    "check that they are running and that the base URLs and model name are right."
                ) from error
        return response.choices[0].message.content or ""


@asynccontextmanager
async def open_client(endpoint: Endpoint | Fleet):
    """A client with `chat()` and `concurrency` for one server or a fleet."""
    if isinstance(endpoint, Fleet):
        yield FleetClient(endpoint)
        return
    client = EndpointClient(endpoint)
    client.concurrency = endpoint.max_concurrency
    try:
        yield client
    finally:
        await client.aclose()

"""The assistant under test: an OpenAI-compatible chat endpoint, a local model (`hf:PATH`),
or a Python callable (`python:module:function`).

Every assistant answers a batch of conversations at once (`await reply(batch)`), one
message list per conversation in the assistant's own view (user/assistant roles, an
optional system prompt first), and returns, in order, the reply text or the exception
that broke that conversation, so one failure never stops the others.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import torch

from userlm.endpoint import Endpoint, EndpointClient
from userlm.errors import UserError

from .loading import load_model_and_tokenizer


class EndpointAssistant:
    """An OpenAI-compatible chat endpoint; retries, backoff and concurrency are `EndpointClient`'s."""

    def __init__(self, endpoint: Endpoint, *, max_tokens: int = 256, temperature: float | None = None):
        self.endpoint = endpoint
        self.params = {"max_tokens": max_tokens}
        if temperature is not None:
            self.params["temperature"] = temperature
        self._client: EndpointClient | None = None
        self.settings = {"kind": "endpoint", "base_url": endpoint.base_url, "model": endpoint.model, **self.params}

    async def reply(self, conversations: list[list[dict]]) -> list[str | Exception]:
        if self._client is None:
            # Created inside the running loop: its HTTP pool belongs to that loop.
            self._client = EndpointClient(self.endpoint)
        calls = [self._client.chat(messages, **self.params) for messages in conversations]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class LocalAssistant:
    """A local instruct model with its own chat template, answering a whole batch in one `generate`."""

    def __init__(self, path: str | Path, *, max_tokens: int = 256):
        self.model, self.tokenizer = load_model_and_tokenizer(path)
        if not self.tokenizer.chat_template:
            raise UserError(f"The assistant model at {path} has no chat template; use an instruct model.")
        self.max_tokens = max_tokens
        self.settings = {"kind": "hf", "path": str(path), "max_tokens": max_tokens, "do_sample": False}

    async def reply(self, conversations: list[list[dict]]) -> list[str | Exception]:
        if not conversations:
            return []
        try:
            return self.generate(conversations)
        except Exception as error:  # a failure of the batch breaks each of its conversations
            return [error] * len(conversations)

    @torch.no_grad()
    def generate(self, conversations: list[list[dict]]) -> list[str]:
        texts = [
            self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in conversations
        ]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        output = self.model.generate(
            **batch, max_new_tokens=self.max_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
        )
        return [
            t.strip()
            for t in self.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        ]

    async def aclose(self) -> None:
        return None


class CallableAssistant:
    """`function(messages) -> str` (or a coroutine function), imported from `module:function`."""

    def __init__(self, spec: str):
        module_name, _, function_name = spec.partition(":")
        try:
            self.function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError):
            raise UserError(
                f"Could not import {function_name!r} from module {module_name!r}; "
                "check python:MODULE:FUNCTION and PYTHONPATH."
            ) from None
        self.settings = {"kind": "python", "function": spec}

    async def reply(self, conversations: list[list[dict]]) -> list[str | Exception]:
        return list(await asyncio.gather(*(self._one(m) for m in conversations), return_exceptions=True))

    async def _one(self, messages: list[dict]) -> str:
        if asyncio.iscoroutinefunction(self.function):
            return str(await self.function(messages))
        return str(await asyncio.to_thread(self.function, messages))

    async def aclose(self) -> None:
        return None


def make_assistant(
    spec: str,
    *,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
    max_retries: int = 4,
    max_concurrency: int = 8,
    max_tokens: int = 256,
):
    """An assistant from its command-line spec: a base URL, `hf:PATH` or `python:module:function`."""
    if spec.startswith("hf:"):
        return LocalAssistant(spec[3:], max_tokens=max_tokens)
    if spec.startswith("python:"):
        return CallableAssistant(spec[len("python:") :])
    if spec.startswith(("http://", "https://")):
        if not model:
            raise UserError("Name the assistant's model with --assistant-model when the assistant is an endpoint URL.")
        endpoint = Endpoint(
            base_url=spec,
            model=model,
            api_key_env=api_key_env,
            timeout=timeout,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
        )
        return EndpointAssistant(endpoint, max_tokens=max_tokens)
    raise UserError(
        f"Unknown assistant {spec!r}; pass an endpoint URL (http://.../v1), hf:PATH or python:module:function."
    )

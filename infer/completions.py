"""The simulator behind an OpenAI-compatible completions endpoint (vLLM, `transformers serve`,
llama.cpp server), fed the raw flipped prompt rendered with the checkpoint's own template.

Guardrails use the server's native parameters where it has them and candidate rejection
(the draft checks of `guardrails.py`, then a new request) for the rest:
- vllm: `logit_bias` bans the end marker before it is allowed; `skip_special_tokens`
  false, so the end marker comes back as text.
- llamacpp: `logit_bias` bans the end marker.
- transformers (`transformers serve`): its `generation_config` parameter turns sampling on
  (the server otherwise keeps the model's greedy default) and makes the end marker stop
  generation; the end marker's ban is candidate rejection. It drops special tokens from
  the text, so a completion that stops with no text at all is read as the end marker (a
  trained simulator never writes an empty turn; a prompted one has no end marker in its
  vocabulary, and an empty turn is then rejected for length).
A banned first word is always caught by candidate rejection: a logit bias would ban the
word everywhere in the turn, not only first.
"""

from __future__ import annotations

import asyncio
import json
import typing
from pathlib import Path

from transformers import AutoTokenizer

from userlm.data_prep.format import END_MARKER, count_user_turns
from userlm.data_prep.templates import render
from userlm.endpoint import Endpoint, EndpointClient

from .config import SimulatorServer
from .guardrails import Guardrails, check_draft
from .loading import resolve_template
from .sampling import derive_seed
from .simulator import GeneratedTurn, UserSimulator

SERVERS = typing.get_args(SimulatorServer)


class CompletionsSimulator:
    def __init__(self, endpoint: Endpoint, checkpoint: str | Path, *, server: str = "transformers", template: str | None = None):
        if server not in SERVERS:
            raise ValueError(f"server must be one of {SERVERS}")
        self.endpoint = endpoint
        self.server = server
        # Only the tokenizer is loaded: it holds the flipped template and the end marker's id.
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.template = resolve_template(self.tokenizer, template, checkpoint)
        self.end_token_id = self.tokenizer.get_vocab().get(END_MARKER)
        self._client: EndpointClient | None = None

    @property
    def settings(self) -> dict:
        return {"backend": "completions", "server": self.server, "base_url": self.endpoint.base_url,
                "model": self.endpoint.model, "template": self.template.name}

    async def agenerate(
        self,
        prompts: list[list[dict]],
        *,
        guardrails: Guardrails | None = None,
        seed: int | list[int] = 0,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 0.8,
    ) -> list[GeneratedTurn | Exception]:
        """One request per prompt and attempt, prompts concurrently; an EndpointError is returned in place."""
        if self._client is None:
            self._client = EndpointClient(self.endpoint)
        seeds = [seed + i for i in range(len(prompts))] if isinstance(seed, int) else list(seed)
        sampling = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "stop": [self.template.eot_token]}
        turns = (self._one(p, s, guardrails, sampling) for p, s in zip(prompts, seeds))
        return list(await asyncio.gather(*turns, return_exceptions=True))

    async def _one(self, prompt: list[dict], seed: int, guardrails: Guardrails | None, sampling: dict) -> GeneratedTurn:
        params = dict(sampling, **self._native(prompt, guardrails, sampling["temperature"]))
        events: list[dict] = []
        attempts = guardrails.max_attempts if guardrails else 1
        text = ""
        rendered = render(self.tokenizer, self.template, prompt)
        for attempt in range(1, attempts + 1):
            choice = await self._client.complete(rendered, seed=derive_seed(seed, attempt) % 2**31, **params)
            text = self._text(choice)
            reason = check_draft(text, prompt, guardrails) if guardrails else None
            if reason is None:
                return GeneratedTurn(text, text == END_MARKER, events, attempts=attempt)
            events.append({**reason, "attempt": attempt})
        return UserSimulator._fallback(text, events, guardrails)

    def _text(self, choice) -> str:
        text = (choice.text or "").replace(self.template.eot_token, "").strip()
        if self.server == "transformers" and not text and choice.finish_reason == "stop" and self.end_token_id is not None:
            return END_MARKER
        return text

    def _native(self, prompt: list[dict], guardrails: Guardrails | None, temperature: float) -> dict:
        params: dict = {}
        if self.server == "vllm":
            params["extra_body"] = {"skip_special_tokens": False}
        if self.server == "transformers":
            stops = [self.tokenizer.convert_tokens_to_ids(self.template.eot_token)]
            if self.end_token_id is not None:
                stops.append(self.end_token_id)
            config = {"do_sample": temperature > 0, "eos_token_id": stops, "pad_token_id": self.tokenizer.pad_token_id}
            params["extra_body"] = {"generation_config": json.dumps(config)}
        end_banned = guardrails is not None and not guardrails.end_allowed(count_user_turns(prompt))
        if end_banned and self.end_token_id is not None and self.server in ("vllm", "llamacpp"):
            params["logit_bias"] = {str(self.end_token_id): -100}
        return params

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

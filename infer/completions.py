"""The simulator behind an OpenAI-compatible completions endpoint (vLLM, `transformers serve`,
llama.cpp server), fed the raw flipped prompt rendered with the checkpoint's own template.

Guardrails use the server's native parameters where it has them and candidate rejection
(the draft checks of `guardrails.py`, then a new request) for the rest:
- vllm: `logit_bias` bans the end marker before it is allowed; `skip_special_tokens`
  false and the end marker a stop string kept in the output, so it comes back as text.
- llamacpp: `logit_bias` bans the end marker.
- transformers (`transformers serve`): its `generation_config` parameter turns sampling on
  (the server otherwise keeps the model's greedy default) and makes the end marker stop
  generation; the end marker's ban is candidate rejection. It drops special tokens from
  the text, so a completion that stops with no text at all is read as the end marker (a
  trained simulator never writes an empty turn; a prompted one has no end marker in its
  vocabulary, and an empty turn is then rejected for length). UserLM-8b's end marker is an
  ordinary token, which survives.
A banned first word is always caught by candidate rejection: a logit bias would ban the
word everywhere in the turn, not only first. Every completion is read by the one draft
parser (`flipped/drafts.py`), as in the local backend; a prompt over the model's context
is refused before any request.
"""

from __future__ import annotations

import asyncio
import json
import os
import typing
from pathlib import Path

import httpx
from transformers import AutoConfig, AutoTokenizer

from userlm.endpoint import Endpoint, EndpointClient
from userlm.errors import UserError
from userlm.flipped.drafts import ParsedDraft, parse_draft
from userlm.flipped.format import END_MARKER, count_user_turns
from userlm.flipped.templates import render

from .config import SimulatorServer
from .guardrails import Guardrails, check_draft
from .loading import DEFAULT_NAME, context_error, context_length, resolve_template
from .sampling import derive_seed
from .simulator import GeneratedTurn, UserSimulator, cut_at_stops, row_seeds

SERVERS = typing.get_args(SimulatorServer)


def served_context_length(endpoint: Endpoint) -> int | None:
    """The context the server says it serves the model with (vLLM's `max_model_len` in /v1/models,
    often shorter than the model's own), or None if it does not say or cannot be reached yet."""
    key = os.environ.get(endpoint.api_key_env)
    try:
        answer = httpx.get(
            f"{endpoint.base_url.rstrip('/')}/models",
            timeout=5,
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )
        models = answer.json().get("data", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    lengths = [m.get("max_model_len") for m in models if isinstance(m, dict) and m.get("id") == endpoint.model]
    return lengths[0] if lengths and isinstance(lengths[0], int) else None


class CompletionsSimulator:
    def __init__(
        self, endpoint: Endpoint, checkpoint: str | Path, *, server: str = "transformers", template: str | None = None
    ):
        if server not in SERVERS:
            raise ValueError(f"server must be one of {SERVERS}")
        self.endpoint = endpoint
        self.server = server
        folder = checkpoint
        if str(checkpoint) == DEFAULT_NAME:
            from userlm.defaults import default_model_dir

            folder = default_model_dir()
        if not Path(folder).is_dir():
            raise UserError(
                f"No checkpoint folder at {folder}; the completions backend reads the "
                "simulator's tokenizer and template from it."
            )
        # Only the tokenizer and config are loaded: the flipped template, the end marker's id, the context.
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.template = resolve_template(self.tokenizer, template, checkpoint)
        self.end_token_id = self.tokenizer.get_vocab().get(END_MARKER)
        end_token = self.tokenizer.added_tokens_decoder.get(self.end_token_id)
        # A server that strips special tokens returns an empty text for a special end marker;
        # UserLM-8b's is an ordinary token and survives.
        self.end_marker_stripped = server == "transformers" and end_token is not None and end_token.special
        try:
            model_config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError):
            model_config = None
        limits = [context_length(model_config, self.tokenizer), served_context_length(endpoint)]
        self.context_length = min((n for n in limits if n), default=None)
        self._client: EndpointClient | None = None

    @property
    def settings(self) -> dict:
        return {
            "backend": "completions",
            "server": self.server,
            "base_url": self.endpoint.base_url,
            "model": self.endpoint.model,
            "template": self.template.name,
        }

    def prompt_tokens(self, prompt: list[dict]) -> int:
        return len(self.tokenizer(render(self.tokenizer, self.template, prompt), add_special_tokens=False)["input_ids"])

    def prompt_error(self, prompt: list[dict], max_new_tokens: int = 64) -> UserError | None:
        """The one sentence for a prompt that does not fit the context with room for the reply, else None."""
        return context_error(self.prompt_tokens(prompt), max_new_tokens, self.context_length)

    async def agenerate(
        self,
        prompts: list[list[dict]],
        *,
        guardrails: Guardrails | None = None,
        seed: int | list[int] = 0,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 0.8,
        stop: tuple[str, ...] = (),
    ) -> list[GeneratedTurn | Exception]:
        """One request per prompt and attempt, prompts concurrently; an EndpointError, or the
        sentence for a prompt over the context, is returned in that prompt's place."""
        if self._client is None:
            self._client = EndpointClient(self.endpoint)
        seeds = row_seeds(seed, len(prompts))
        stops = [self.template.eot_token, *(s for s in stop if s)]
        if self.server == "vllm" and self.end_token_id is not None:
            # Stop at the end marker too (UserLM-8b's is no EOS); vLLM is told to keep stop strings in the text.
            stops.append(END_MARKER)
        sampling = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "stop": stops}
        turns = (self._one(p, s, guardrails, sampling, tuple(stop)) for p, s in zip(prompts, seeds))
        return list(await asyncio.gather(*turns, return_exceptions=True))

    async def _one(
        self, prompt: list[dict], seed: int, guardrails: Guardrails | None, sampling: dict, stop: tuple[str, ...]
    ) -> GeneratedTurn:
        error = self.prompt_error(prompt, sampling["max_tokens"])
        if error is not None:
            raise error
        params = dict(sampling, **self._native(prompt, guardrails, sampling["temperature"]))
        events: list[dict] = []
        attempts = guardrails.max_attempts if guardrails else 1
        rendered = render(self.tokenizer, self.template, prompt)
        for attempt in range(1, attempts + 1):
            choice = await self._client.complete(rendered, seed=derive_seed(seed, attempt) % 2**31, **params)
            draft = self._draft(choice, stop)
            reason = check_draft(draft, prompt, guardrails) if guardrails else None
            if reason is None:
                return GeneratedTurn.of(
                    draft, events, attempt, "length" if choice.finish_reason == "length" else "stop"
                )
            events.append({**reason, "attempt": attempt})
        return UserSimulator._fallback(draft, events, guardrails)

    def _draft(self, choice, stop: tuple[str, ...]) -> ParsedDraft:
        return parse_draft(
            cut_at_stops(choice.text or "", stop),
            self.template,
            special_tokens_stripped=self.server == "transformers",
            has_end_marker=self.end_marker_stripped,
        )

    def _native(self, prompt: list[dict], guardrails: Guardrails | None, temperature: float) -> dict:
        params: dict = {}
        if self.server == "vllm":
            params["extra_body"] = {"skip_special_tokens": False, "include_stop_str_in_output": True}
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

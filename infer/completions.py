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
word everywhere in the turn, not only first.

P(end) and end steering (`infer/turn_sampling.py`): every request asks for the first token's
top log-probabilities (`logprobs`), which vLLM returns raw (before temperature and bias), and
P(end) is read there; where the end marker is not among them, vLLM is asked once more for its
exact log-probability as the last token of the prompt (`prompt_logprobs`). `end_bias` is a
`logit_bias` on the end marker (vllm, llamacpp) or a `sequence_bias` in the generation config
(transformers). `end_threshold` first asks for one token's log-probabilities, then either
writes the end marker as the turn or generates with the end marker banned. `transformers
serve` returns no log-probabilities: its turns record no P(end), and a threshold is refused
with one sentence. Every completion is read by the one draft
parser (`flipped/drafts.py`), as in the local backend; a prompt over the model's context
is refused before any request.
"""

from __future__ import annotations

import asyncio
import json
import math
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
from .turn_sampling import DEFAULT_SAMPLING, TurnSampling, unsteerable_error

SERVERS = typing.get_args(SimulatorServer)
# Top log-probabilities asked for at each token: vLLM's default most.
TOP_LOGPROBS = 20
# The logit bias that bans a token (OpenAI's floor).
BANNED = -100


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

    def prompt_error(
        self, prompt: list[dict], max_new_tokens: int = DEFAULT_SAMPLING.max_new_tokens
    ) -> UserError | None:
        """The one sentence for a prompt that does not fit the context with room for the reply, else None."""
        return context_error(self.prompt_tokens(prompt), max_new_tokens, self.context_length)

    def steering_error(self, sampling: TurnSampling) -> UserError | None:
        """The one sentence for end steering this server cannot do, else None."""
        if sampling.end_threshold is not None and self.server == "transformers":
            return UserError(
                "end_threshold needs the simulator's P(end), which `transformers serve` does not return (it gives "
                "no log-probabilities); serve the simulator with vLLM (simulator_server: vllm) or use end_bias."
            )
        return unsteerable_error(sampling, self.end_token_id)

    async def agenerate(
        self,
        prompts: list[list[dict]],
        *,
        seed: int | list[int] = 0,
        guardrails: Guardrails | None = None,
        sampling: TurnSampling = DEFAULT_SAMPLING,
        stop: tuple[str, ...] = (),
    ) -> list[GeneratedTurn | Exception]:
        """One request per prompt and attempt (and one more per prompt for a threshold), prompts
        concurrently; an EndpointError, or the sentence for a prompt over the context or for steering
        the server cannot do, is returned in that prompt's place."""
        if self._client is None:
            self._client = EndpointClient(self.endpoint)
        seeds = row_seeds(seed, len(prompts))
        stops = [self.template.eot_token, *(s for s in stop if s)]
        if self.server == "vllm" and self.end_token_id is not None:
            # Stop at the end marker too (UserLM-8b's is no EOS); vLLM is told to keep stop strings in the text.
            stops.append(END_MARKER)
        params = {
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stop": stops,
            "logprobs": TOP_LOGPROBS,
        }
        turns = (self._one(p, s, guardrails, sampling, params, tuple(stop)) for p, s in zip(prompts, seeds))
        return list(await asyncio.gather(*turns, return_exceptions=True))

    async def _one(
        self,
        prompt: list[dict],
        seed: int,
        guardrails: Guardrails | None,
        sampling: TurnSampling,
        params: dict,
        stop: tuple[str, ...],
    ) -> GeneratedTurn:
        error = self.prompt_error(prompt, sampling.max_new_tokens) or self.steering_error(sampling)
        if error is not None:
            raise error
        rendered = render(self.tokenizer, self.template, prompt)
        end_allowed = guardrails is None or guardrails.end_allowed(count_user_turns(prompt))
        p_end, leaves = None, None
        if sampling.end_threshold is not None:
            p_end = await self._end_probability(rendered, None, seed)
            leaves = sampling.leaves(p_end)
            if leaves and end_allowed:
                draft = parse_draft(END_MARKER, self.template)
                return GeneratedTurn.of(draft, [], 1, p_end=p_end, p_end_steered=sampling.steered(p_end))
        params = dict(params, **self._native(sampling, end_allowed and leaves is not False))
        events: list[dict] = []
        attempts = guardrails.max_attempts if guardrails else 1
        for attempt in range(1, attempts + 1):
            choice = await self._client.complete(rendered, seed=derive_seed(seed, attempt) % 2**31, **params)
            if attempt == 1 and p_end is None:
                p_end = await self._end_probability(rendered, choice, seed)
            found = {"p_end": p_end, "p_end_steered": None if p_end is None else sampling.steered(p_end)}
            draft = self._draft(choice, stop)
            reason = check_draft(draft, prompt, guardrails) if guardrails else None
            if reason is None:
                finish = "length" if choice.finish_reason == "length" else "stop"
                return GeneratedTurn.of(draft, events, attempt, finish, **found)
            events.append({**reason, "attempt": attempt})
        return UserSimulator._fallback(draft, events, guardrails, **found)

    async def _end_probability(self, rendered: str, choice, seed: int) -> float | None:
        """P(end) of the first token: from a completion's top log-probabilities (one token is asked for
        when `choice` is None); where the end marker is not among them, vLLM's exact figure for the
        end marker as the prompt's last token; None where the server gives no log-probabilities."""
        if self.end_token_id is None:
            return None
        if choice is None:
            choice = await self._client.complete(
                rendered, seed=derive_seed(seed, 0) % 2**31, max_tokens=1, logprobs=TOP_LOGPROBS, **self._native()
            )
        top = choice.logprobs.top_logprobs if choice.logprobs is not None else None
        if not top:
            return None
        if END_MARKER in top[0]:
            return math.exp(top[0][END_MARKER])
        if self.server != "vllm":
            return None
        answer = await self._client.complete(
            rendered + END_MARKER, max_tokens=1, extra_body={"prompt_logprobs": 0, "skip_special_tokens": False}
        )
        last = (getattr(answer, "prompt_logprobs", None) or [None])[-1] or {}
        value = last.get(str(self.end_token_id))
        return math.exp(value["logprob"]) if value else None

    def _draft(self, choice, stop: tuple[str, ...]) -> ParsedDraft:
        return parse_draft(
            cut_at_stops(choice.text or "", stop),
            self.template,
            special_tokens_stripped=self.server == "transformers",
            has_end_marker=self.end_marker_stripped,
        )

    def _native(self, sampling: TurnSampling = DEFAULT_SAMPLING, end_allowed: bool = True) -> dict:
        """The server's own parameters: its special-token and stop handling, the end marker's ban
        (`end_allowed` false: by the guardrails or the threshold) and the end bias."""
        params: dict = {}
        if self.server == "vllm":
            params["extra_body"] = {"skip_special_tokens": False, "include_stop_str_in_output": True}
        bias = BANNED if not end_allowed else sampling.end_bias
        if self.server == "transformers":
            stops = [self.tokenizer.convert_tokens_to_ids(self.template.eot_token)]
            if self.end_token_id is not None:
                stops.append(self.end_token_id)
            config = {
                "do_sample": sampling.temperature > 0,
                "eos_token_id": stops,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            # The ban stays candidate rejection here (as it always was); the bias is a sequence bias.
            if self.end_token_id is not None and end_allowed and sampling.end_bias:
                config["sequence_bias"] = [[[self.end_token_id], sampling.end_bias]]
            params["extra_body"] = {"generation_config": json.dumps(config)}
        elif bias and self.end_token_id is not None:
            params["logit_bias"] = {str(self.end_token_id): bias}
        return params

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

"""`userlm serve`: a user simulator behind an OpenAI-compatible HTTP server (docs/design.md#serving).

    userlm serve out/persona                                   # http://127.0.0.1:8000/v1 (a `userlm train` folder)
    userlm serve --simulator base-model --adapter out/persona  # the same as `userlm simulate` and `userlm test` name it
    userlm serve out/persona --end-text '###STOP###' --roles flipped --api-key-env USERLM_KEY
    userlm serve out/persona --simulator-endpoint http://127.0.0.1:8001/v1 --simulator-server vllm

Harnesses built for prompted user simulators (tau2-bench through LiteLLM, DeepEval, inspect,
promptfoo) call it as they would call any chat model: the reply is the next *user* turn;
when the simulated user leaves, the reply is the end text with finish_reason "stop" and
`choices[i].userlm.ended` true, and `choices[i].userlm.p_end` says how likely it was to leave at
that turn. The paper's guardrails apply server-side (per-request overrides in the extra body
field `guardrails`), and so does end steering (`end_bias`, `end_threshold` in the body;
`infer/turn_sampling.py`); concurrent requests share generate calls (`serve/engine.py`); an
upstream completions server (vLLM) can do the generating, with the guardrails and the draft
parser applied here. Errors are OpenAI's error JSON with one
sentence, and the server keeps serving after each.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from userlm.config import from_dict, parse_config, to_dict
from userlm.errors import UserError
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import render

from ..config import SimulatorOptions
from ..guardrails import Guardrails
from ..loading import context_error
from ..sampling import derive_seed
from ..turn_sampling import TurnSampling
from . import protocol
from .engine import BatchingEngine, Sampling, UpstreamEngine

log = logging.getLogger("userlm.serve")


@dataclass(kw_only=True)
class ServeConfig(SimulatorOptions):
    simulator: str = field(
        metadata={
            "positional": True,
            "help": "the simulator: a `userlm train` output folder, a model "
            "folder (UserLM-8b works as it is), a .gguf file, "
            "or 'default' (the embedded SmolLM2, prompted); with simulator_endpoint, the "
            "folder that gives the tokenizer and template",
        }
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "mixed into every request's own seed (a request with a "
            "seed is reproducible; one without draws fresh)",
            "min": 0,
        },
    )
    host: str = field(
        default="127.0.0.1", metadata={"help": "address to listen on; loopback unless you mean to expose it"}
    )
    port: int = field(default=8000, metadata={"help": "port to listen on", "min": 1, "max": 65535})
    model_name: str | None = field(
        default=None, metadata={"help": "the model name clients send; default: the simulator folder's name"}
    )
    end_text: str = field(
        default=END_MARKER,
        metadata={
            "help": "the reply's text when the simulated user leaves (tau2-bench and promptfoo listen for ###STOP###)",
            "nonempty": True,
        },
    )
    roles: Literal["natural", "flipped"] = field(
        default="natural",
        metadata={
            "help": "natural: the user's turns are 'user'; flipped: the simulator's own turns "
            "come as 'assistant' and the agent's as 'user', "
            "as prompted user simulators are called (a request's `roles` field overrides it)"
        },
    )
    api_key_env: str | None = field(
        default=None, metadata={"help": "environment variable holding the bearer key clients must send; unset: no key"}
    )
    max_batch_size: int = field(
        default=32, metadata={"help": "rows (requests x n) at most per shared generate call", "min": 1}
    )
    batch_wait_ms: float = field(
        default=10.0,
        metadata={
            "help": "a batch starts once no request has arrived for this long (at most 20 "
            "such waits), so requests sent together share it",
            "min": 0,
        },
    )
    max_request_mb: float = field(default=16.0, metadata={"help": "largest request body accepted, in MB", "above": 0})
    timeout: float = field(
        default=60.0, metadata={"help": "seconds per upstream request (simulator_endpoint)", "above": 0}
    )
    max_retries: int = field(default=4, metadata={"help": "retries per upstream request", "min": 0})
    concurrency: int = field(default=64, metadata={"help": "upstream requests in flight at once", "min": 1})
    log_level: Literal["debug", "info", "warning", "error"] = field(
        default="info", metadata={"help": "server log level"}
    )

    def served_name(self) -> str:
        return self.model_name or Path(self.simulator).name or self.simulator


def main(words: list[str]) -> int:
    config = parse_config(
        ServeConfig,
        words,
        prog="userlm serve",
        description=(
            "Serve a user simulator as an OpenAI-compatible server (chat and "
            "completions): the reply is the next user turn."
        ),
    )
    serve(config)
    return 0


def serve(config: ServeConfig) -> None:
    """Load the simulator and serve it until interrupted."""
    import uvicorn

    key = api_key(config)
    app = create_app(config, load_engine(config), key=key)
    print(
        f"userlm serve: {config.served_name()!r} at http://{config.host}:{config.port}/v1"
        f"{' (bearer key required)' if key else ''}; Ctrl-C stops.",
        flush=True,
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)


def api_key(config: ServeConfig) -> str | None:
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise UserError(
            f"The environment variable {config.api_key_env} is empty; set it to the "
            "key clients must send, or drop api_key_env."
        )
    return key


def load_engine(config: ServeConfig):
    """The engine the config names: a local simulator with dynamic batching, or an upstream completions server."""
    from ..simulate import load_simulator

    simulator = load_simulator(
        config, timeout=config.timeout, max_retries=config.max_retries, concurrency=config.concurrency
    )
    if config.simulator_endpoint:
        return UpstreamEngine(simulator)
    return BatchingEngine(simulator, max_batch_size=config.max_batch_size, wait_s=config.batch_wait_ms / 1000)


def create_app(config: ServeConfig, engine, *, key: str | None = None):
    """The FastAPI app serving `engine` (which holds the simulator) under the config's name and defaults."""
    name = config.served_name()
    simulator = engine.simulator
    counter = TokenCounter(simulator.tokenizer, simulator.template)
    served = config.sampling()  # the end calibration file is read once

    @asynccontextmanager
    async def lifespan(app):
        await engine.start()
        yield
        await engine.stop()

    max_bytes = int(config.max_request_mb * 1e6)
    app = FastAPI(title="userlm serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Gate, key=key, max_bytes=max_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        if first.get("type") == "json_invalid":
            return protocol.error_response(400, "The request body is not valid JSON.")
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
        return protocol.error_response(
            400, f"Invalid request: `{where}`: {first.get('msg', 'invalid value')}.", param=where
        )

    @app.exception_handler(protocol.RequestError)
    async def refused(request: Request, error: protocol.RequestError):
        return protocol.error_response(error.status, error.message, code=error.code, param=error.param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 413:
            return protocol.error_response(
                413,
                f"The request is larger than {max_bytes / 1e6:g} MB; shorten the conversation.",
                code="request_too_large",
            )
        return protocol.error_response(
            error.status_code, f"{request.method} {request.url.path} is not served here ({error.detail})."
        )

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception):
        # Never a traceback to the client; the server's log has it.
        log.error("internal error on %s", request.url.path, exc_info=error)
        return protocol.error_response(500, "The server failed on this request; its log has the details.")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, **engine.stats}

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "userlm-kit",
                    "max_model_len": simulator.context_length,
                }
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(body: protocol.ChatRequest, request: Request):
        check_model(body)
        prompt = protocol.chat_prompt(body, config.roles)
        return await respond(body, [prompt], request, protocol.chat_body)

    @app.post("/v1/completions")
    async def completions(body: protocol.CompletionRequest, request: Request):
        check_model(body)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts:
            raise protocol.RequestError(400, "The prompt list is empty; send at least one prompt.", param="prompt")
        prompts = [protocol.completion_prompt(text, simulator.tokenizer, simulator.template) for text in texts]
        return await respond(body, prompts, request, protocol.completion_body)

    def check_model(body) -> None:
        if body.model not in (name, config.simulator):
            raise protocol.RequestError(
                404,
                f"The model {body.model!r} is not served here; this server serves {name!r}.",
                code="model_not_found",
                param="model",
            )

    async def respond(body: protocol.Sampling, prompts: list[list[dict]], request: Request, build):
        sampling = sampling_of(body, config, served, getattr(simulator, "steering_error", None))
        prompt_tokens = 0
        for prompt in prompts:
            tokens = await asyncio.to_thread(counter.prompt, prompt)
            error = context_error(tokens, sampling.turn.max_new_tokens, simulator.context_length)
            if error is not None:
                raise protocol.RequestError(400, str(error), code="context_length_exceeded", param="messages")
            prompt_tokens += tokens * body.n
        rows = [prompt for prompt in prompts for _ in range(body.n)]
        turns = await until_done_or_gone(
            asyncio.ensure_future(engine.generate(rows, row_seeds(config.seed, body.seed, len(rows)), sampling)),
            request,
        )
        if turns is None:
            return Response(status_code=499)  # the client left; nobody reads this
        failed = next((t for t in turns if isinstance(t, Exception)), None)
        if isinstance(failed, UserError):  # the upstream server failed: its one sentence
            return protocol.error_response(502, str(failed))
        if failed is not None:
            raise failed
        end_text = body.end_text or config.end_text
        texts = [protocol.reply_text(turn, end_text) for turn in turns]
        completion_tokens = await asyncio.to_thread(counter.texts, texts)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        payload = build(name, turns, end_text, usage)
        if not body.stream:
            return JSONResponse(payload)
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in protocol.stream_chunks(payload, include_usage)] + [
            "data: [DONE]\n\n"
        ]
        return StreamingResponse(iter(lines), media_type="text/event-stream")

    return app


class TokenCounter:
    """Token counts for requests and usage, from a copy of the simulator's tokenizer behind a lock:
    a fast tokenizer used from two threads at once (here and in generation) can fail ("Already borrowed")."""

    def __init__(self, tokenizer, template):
        self.tokenizer, self.template = copy.deepcopy(tokenizer), template
        self.lock = threading.Lock()

    def prompt(self, messages: list[dict]) -> int:
        with self.lock:
            return len(
                self.tokenizer(render(self.tokenizer, self.template, messages), add_special_tokens=False)["input_ids"]
            )

    def texts(self, texts: list[str]) -> int:
        with self.lock:
            return sum(len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"])


class Gate:
    """ASGI middleware in front of /v1/: the bearer key before anything is read, then a cap on the
    body (its declared length at once, a chunked body as it arrives) before anything is parsed.
    FastAPI's own means run later or answer otherwise: a route's key dependency runs only once the
    body was read and parsed, and `max_body_size` answers a declared length in plain text over the
    app's error JSON. Here a body too large reaches the app's handler as FastAPI's 413."""

    def __init__(self, app, *, key: str | None, max_bytes: int):
        self.app, self.key, self.max_bytes = app, key, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and not secrets.compare_digest(
            headers.get(b"authorization", b""), f"Bearer {self.key}".encode()
        ):
            refusal = protocol.error_response(
                401,
                "The API key is missing or wrong; send it as a bearer token (Authorization: Bearer KEY).",
                code="invalid_api_key",
            )
            return await refusal(scope, receive, send)
        declared = headers.get(b"content-length", b"0")
        received = 0

        async def counted():
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise StarletteHTTPException(413)  # FastAPI hands it to the app's handler as it is
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise StarletteHTTPException(413)
            return message

        await self.app(scope, counted, send)


def sampling_of(body, config: ServeConfig, served: TurnSampling, steering_error=None) -> Sampling:
    """A request's generation settings: its own fields (sampling, and end_bias / end_threshold in the
    body) over the server's (`served`); `steering_error(turn)` refuses steering an upstream server cannot do."""
    try:
        guardrails = guardrails_of(body.guardrails, config.guardrails)
    except UserError as error:
        raise protocol.RequestError(400, str(error), param="guardrails") from None
    asked = {
        "max_new_tokens": body.token_limit(),
        "temperature": body.temperature,
        "top_p": body.top_p,
        "end_bias": body.end_bias,
        "end_threshold": body.end_threshold,
    }
    turn = served.with_fields(**{key: value for key, value in asked.items() if value is not None})
    error = steering_error(turn) if steering_error is not None else None
    if error is not None:
        raise protocol.RequestError(400, str(error), param="end_threshold")
    return Sampling(guardrails=guardrails, turn=turn, stop=body.stops())


def guardrails_of(override, default: Guardrails | None) -> Guardrails | None:
    """true: the server's guardrails; false or null: none; a mapping: its keys over the server's (or the defaults)."""
    if override is True:
        return default
    if override is False or override is None:
        return None
    base = to_dict(default) if default is not None else {}
    return from_dict(Guardrails, {**base, **override}, dict.fromkeys(override, "in the request's guardrails"))


def row_seeds(server_seed: int, seed: int | None, rows: int) -> list[int]:
    """One seed per row: derived from the server's and the request's seeds (reproducible), else fresh."""
    if seed is None:
        return [secrets.randbits(62) for _ in range(rows)]
    return [derive_seed(server_seed, seed, row) for row in range(rows)]


async def until_done_or_gone(task: asyncio.Future, request, poll_s: float = 0.2):
    """The task's result, or None once the client has disconnected (the task is then cancelled)."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=poll_s)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            return None

"""The OpenAI-compatible wire format of `userlm serve`: request bodies, reading them into
flipped prompts, response bodies, and OpenAI-style errors.

Chat requests carry the conversation in natural roles (system = intent and persona, then
the user's and the assistant's turns) or, with `roles: flipped`, as prompted user
simulators see it (the simulator's own turns as "assistant", the agent's as "user"). Either
way the reply is the next *user* turn, in the message OpenAI calls the assistant's.
Completions requests carry the flipped prompt already rendered with the simulator's
template, as the completions backend sends it; it is read back into messages so that the
guardrails can see the turns.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import FlippedTemplate, read_prompt

from ..simulator import GeneratedTurn

Roles = Literal["natural", "flipped"]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ... are accepted and not used
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class Sampling(BaseModel):
    """The OpenAI sampling fields both endpoints honour, plus userlm's own extra body fields."""

    # Other OpenAI fields (user, logprobs, presence_penalty, tools, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")
    model: str
    n: int = Field(default=1, ge=1, le=64)
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    # userlm's extra body fields: guardrail overrides (a mapping of Guardrails keys, or
    # false/null for none), the end text, end steering (`infer/turn_sampling.py`; null: the
    # server's), and the role convention.
    guardrails: dict[str, Any] | bool | None = True
    end_text: str | None = None
    end_bias: float | None = Field(default=None, ge=-100, le=100)
    end_threshold: float | None = Field(default=None, ge=0, le=1)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    roles: Roles | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]


class RequestError(Exception):
    """A request the server refuses: an HTTP status and one sentence."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
}


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    kind = ERROR_TYPES.get(status, "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def chat_prompt(request: ChatRequest, default_roles: str) -> list[dict]:
    """The flipped prompt a chat request asks the next user turn of."""
    roles = request.roles or default_roles
    swap = {"user": "assistant", "assistant": "user"} if roles == "flipped" else {}
    prompt = []
    for index, message in enumerate(request.messages):
        if message.role == "tool":
            raise RequestError(
                400,
                "Tool messages are not supported: the simulator writes user "
                "turns only; send the conversation's text turns.",
                param="messages",
            )
        role = "system" if message.role == "developer" else swap.get(message.role, message.role)
        if role == "system" and index > 0:
            raise RequestError(
                400,
                "Only the first message may be a system message (the intent, and persona); "
                "send the others as user or assistant turns.",
                param="messages",
            )
        prompt.append({"role": role, "content": message.text()})
    if prompt[-1]["role"] == "user":
        hint = (
            "send roles=flipped if your harness swaps them"
            if roles == "natural"
            else "send roles=natural if your roles are not swapped"
        )
        raise RequestError(
            400,
            "The conversation ends with a user turn, but the reply is the next user turn; end "
            f"it with the assistant's message, or {hint}.",
            param="messages",
        )
    return prompt


def completion_prompt(text: str, tokenizer, template: FlippedTemplate) -> list[dict]:
    """The messages of a flipped prompt rendered with the simulator's template."""
    try:
        messages = read_prompt(tokenizer, template, text)
    except ValueError as error:
        raise RequestError(
            400, f"The prompt is {error}; send messages to /v1/chat/completions instead.", param="prompt"
        ) from None
    if not messages:
        raise RequestError(
            400, "The prompt holds no messages; send at least the system message (the intent).", param="prompt"
        )
    return messages


def reply_text(turn: GeneratedTurn, end_text: str) -> str:
    """What the client reads: the user's words, then the end text when the user leaves."""
    if turn.exhausted:
        return end_text
    if turn.is_end:
        words = "" if turn.text == END_MARKER else turn.text
        return f"{words} {end_text}" if words else end_text
    return turn.text


def userlm_field(turn: GeneratedTurn) -> dict:
    """The explicit account of a choice: did the simulated user leave, and why, and how likely it was to
    leave (`p_end`; `p_end_steered` where an end bias changed it)."""
    reason = "guardrails_exhausted" if turn.exhausted else "user_ended" if turn.is_end else None
    return {
        "ended": reason is not None,
        "reason": reason,
        "attempts": turn.attempts,
        "guardrail_events": turn.events,
        **turn.end_probabilities(),
    }


def finish_reason(turn: GeneratedTurn) -> str:
    return "stop" if turn.is_end or turn.exhausted else turn.finish_reason


def chat_body(model: str, turns: list[GeneratedTurn], end_text: str, usage: dict) -> dict:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": reply_text(t, end_text)},
            "logprobs": None,
            "finish_reason": finish_reason(t),
            "userlm": userlm_field(t),
        }
        for i, t in enumerate(turns)
    ]
    return response_body("chat.completion", "chatcmpl", model, choices, usage)


def completion_body(model: str, turns: list[GeneratedTurn], end_text: str, usage: dict) -> dict:
    choices = [
        {
            "index": i,
            "text": reply_text(t, end_text),
            "logprobs": None,
            "finish_reason": finish_reason(t),
            "userlm": userlm_field(t),
        }
        for i, t in enumerate(turns)
    ]
    return response_body("text_completion", "cmpl", model, choices, usage)


def response_body(kind: str, id_prefix: str, model: str, choices: list[dict], usage: dict) -> dict:
    return {
        "id": f"{id_prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def stream_chunks(body: dict, include_usage: bool) -> list[dict]:
    """A whole reply as OpenAI stream chunks: the role, each choice's text, each finish, then usage.

    A turn is released only once the guardrails have accepted it, so its text comes as one chunk.
    """
    chat = body["object"] == "chat.completion"
    base = {
        "id": body["id"],
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": body["created"],
        "model": body["model"],
    }
    chunks = []
    for choice in body["choices"]:
        i = choice["index"]
        if chat:
            chunks.append(
                {
                    **base,
                    "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                }
            )
            chunks.append(
                {
                    **base,
                    "choices": [
                        {"index": i, "delta": {"content": choice["message"]["content"]}, "finish_reason": None}
                    ],
                }
            )
            chunks.append(
                {
                    **base,
                    "choices": [
                        {"index": i, "delta": {}, "finish_reason": choice["finish_reason"], "userlm": choice["userlm"]}
                    ],
                }
            )
        else:
            chunks.append({**base, "choices": [{"index": i, "text": choice["text"], "finish_reason": None}]})
            chunks.append(
                {
                    **base,
                    "choices": [
                        {"index": i, "text": "", "finish_reason": choice["finish_reason"], "userlm": choice["userlm"]}
                    ],
                }
            )
    if include_usage:
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks

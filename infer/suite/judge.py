"""Task-success verdicts from a judge: any OpenAI-compatible chat endpoint, asked per conversation
with the suite's rubric for YES or NO and one sentence why.

Answers are kept in a sqlite cache in the output folder (`data_prep/llm_cache.py`), keyed
by the exact request (model, messages, sampling), so a verdict is never asked twice: not
on a rerun, and not for two conversations whose transcripts are the same. A request the
endpoint failed is not cached; the conversation is unjudged and asked again next run.
"""

from __future__ import annotations

import re
from pathlib import Path

from userlm.data_prep.llm_cache import cached_chats, request_key
from userlm.endpoint import Endpoint, EndpointError
from userlm.flipped.format import END_MARKER

from .config import Judge

QUESTION = (
    "You judge whether a conversation between a user and an AI assistant succeeded.\n\n"
    "What success means: {rubric}\n\n"
    "The user's goal: {goal}\n\n"
    "The conversation:\n{transcript}\n\n"
    "Did the conversation succeed? Answer YES or NO, then one sentence saying why, "
    'in the form "YES: ..." or "NO: ...".'
)
VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
# What a judge that ignores the form tends to write instead: "The conversation failed because ...".
OUTCOME = re.compile(r"\b(?<!not )(succeeded|failed)\b", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s")
REASON_CHARS = 300


def judge_messages(record: dict, rubric: str) -> list[dict]:
    lines = []
    for turn in record["turns"]:
        content = "[leaves the conversation]" if turn["content"] == END_MARKER else turn["content"]
        lines.append(f"{turn['role'].upper()}: {content}")
    question = QUESTION.format(rubric=rubric.strip(), goal=record["intent"].strip(), transcript="\n".join(lines))
    return [{"role": "user", "content": question}]


def parse_judgement(answer: str) -> dict:
    """{"success": bool | None, "reason": str}: the first YES or NO and the sentence after it; failing
    those, a first sentence saying the conversation succeeded or failed, which is then the reason."""
    match = VERDICT.search(answer)
    if match is not None:
        rest = answer[match.end() :].lstrip(" \t\r\n:.,;-—")
        return {"success": match.group(1).lower() == "yes", "reason": first_sentence(rest)}
    sentence = first_sentence(answer)
    match = OUTCOME.search(sentence)
    if match is not None:
        return {"success": match.group(1).lower() == "succeeded", "reason": sentence}
    return {"success": None, "reason": f"the judge's answer holds no YES or NO: {answer.strip()[:80]!r}"}


def first_sentence(text: str) -> str:
    return SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()[:REASON_CHARS] if text.strip() else ""


def judge_conversations(
    records: list[dict], judge: Judge, cache: Path, *, progress: bool = True
) -> tuple[dict[str, dict], int]:
    """A verdict per conversation id ({"success", "reason"}; success None when the judge failed),
    and how many requests went to the endpoint (the rest came from the cache)."""
    endpoint = judge.endpoint_at(judge.endpoint, judge.model, judge.key_env)
    params = {"temperature": 0.0, "max_tokens": judge.max_tokens}
    requests, key_of = {}, {}
    for record in records:
        messages = judge_messages(record, judge.rubric)
        key = request_key(judge.model, messages, params)
        requests[key] = messages
        key_of[record["conversation_id"]] = key
    answers, asked = cached_chats(
        endpoint, requests, cache, kind="suite-judge", params=params, desc="judge", progress=progress
    )
    verdicts = {}
    for conversation_id, key in key_of.items():
        answer = answers[key]
        if isinstance(answer, EndpointError):
            verdicts[conversation_id] = {
                "success": None,
                "reason": f"the judge failed: {answer}",
                "error": " ".join(str(answer).split()),
            }
        else:
            verdicts[conversation_id] = {**parse_judgement(answer), "answer": answer}
    return verdicts, asked


def judge_label(judge: Judge) -> str:
    return f"the judge {judge.model!r} at {Endpoint(base_url=judge.endpoint, model=judge.model).host}"

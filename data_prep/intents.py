"""Intents (DESIGN.md 3.2, 4.4): `assign_intents` fills `intent` and `intent_source` from
one of three sources.

- `heuristic` (offline default): keyword rules name the task type from the first user
  turns, and up to three frequent content words name the topic. High level by
  construction: it never copies the first turn (a first turn made only of topic words
  loses words until it is no longer covered).
- `column`: an existing text field of the source rows (`--intent-column`).
- `llm`: `llm_intents.llm_intents` with an OpenAI-compatible endpoint, cache and resume.

Reason codes for records that get no intent: `intent_missing` (the column is absent or
empty), `intent_failed` (the endpoint gave up on this conversation).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from userlm.data_prep.format import INTENT_PREFIX
from userlm.data_prep.words import STOPWORDS

from .reading import Rejection

TASK_CHARS = 600
TOPIC_CHARS = 1500

WORD = re.compile(r"[A-Za-z][A-Za-z+#'-]*[A-Za-z+#]")

WRITING_KINDS = (
    "cover letter", "email", "letter", "essay", "story", "poem", "blog post", "article", "speech",
    "song", "script", "resume", "report", "proposal", "description", "tweet", "post", "outline",
    "summary", "review", "message", "ad", "slogan",
)
WRITING = re.compile(
    r"\b(?:write|draft|compose|create|generate|make)\b(?:\W+\w+){0,4}?\W+(" + "|".join(WRITING_KINDS) + r")s?\b"
)
# (pattern, task) in priority order; the first match names the task.
TASK_RULES = (
    (re.compile(r"\b(translat\w*|tradu\w*|übersetz\w*)\b"), "get a piece of text translated"),
    (re.compile(r"\b(summari[sz]\w*|tl;?dr)\b"), "get a text summarized"),
    (
        re.compile(r"\b(rewrite|paraphrase|proofread|rephrase|reword|grammar|bullets|bullet points?|shorten)\b"),
        "get help editing a piece of text",
    ),
    (
        re.compile(
            r"\b(python|javascript|typescript|java|c\+\+|c#|sql|html|css|react|code|function|script|bug|"
            r"error|exception|compile|regex|api|dataframe|docker|kubernetes|linux|bash|git|program|class|"
            r"database|query|json|node|django|flask|rust|golang|swift|kotlin|php|unity|website|webpage|frontend|"
            r"backend|server|button|excel|formula)\b"
        ),
        "get help with a programming task",
    ),
    (
        re.compile(r"\b(solve|equation|calculate|integral|derivative|probability|math\w*|algebra|theorem)\b"),
        "work through a math problem",
    ),
    (re.compile(r"\b(act as|pretend|role[- ]?play|you are a|you will be)\b"), "set up a role-play with the assistant"),
    (re.compile(r"\b(invent|imagine|come up with|design)\b"), "get help with a creative project"),
    (re.compile(r"\b(ideas?|brainstorm|suggest\w*|names? for|recommend\w*)\b"), "brainstorm ideas"),
    (re.compile(r"\b(plan|schedule|itinerary|strategy|roadmap|diet|workout)\b"), "make a plan"),
    (re.compile(r"\b(explain|what is|what are|how does|how do|why|difference between)\b"), "understand a topic"),
)

# Words that name the request rather than its topic, on top of the common stopwords.
REQUEST_WORDS = frozenset(
    """also just now please write create make give help need want like using use used following provide example
    examples explain tell know something things thing answer question questions based thanks thank okay ok sure
    yes get got one two three new way ways good best well much many every another really even still able continue
    more less within without include including each etc via per may might must shall generate list show find take
    keep put set go going see look let then here there being done describe rewrite draft compose translate
    summarize summarise""".split()
)
TOPIC_STOPWORDS = STOPWORDS | REQUEST_WORDS


def topic_words(first_turn: str, all_user_text: str, limit: int = 3, exclude: frozenset = frozenset()) -> list[str]:
    """Up to `limit` content words of the first turn, the ones the user repeats most first."""
    first = [w.lower() for w in WORD.findall(first_turn)]
    counts = Counter(w.lower() for w in WORD.findall(all_user_text))
    candidates = []
    for word in first:
        if len(word) >= 4 and word not in TOPIC_STOPWORDS and word not in exclude and word not in candidates:
            candidates.append(word)
    chosen = sorted(candidates, key=lambda w: (-counts[w], candidates.index(w)))[:limit]
    # Never reproduce the whole first turn: a turn made only of topic words loses some.
    while chosen and set(first) <= set(chosen):
        chosen.pop()
    return chosen


def task_of(text: str) -> str:
    lowered = text.lower()
    writing = WRITING.search(lowered)
    if writing:
        kind = writing.group(1)
        return f"get help writing {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    for pattern, task in TASK_RULES:
        if pattern.search(lowered):
            return task
    if "?" in text:
        return "get answers to some questions"
    return "get help with a task"


def heuristic_intent(record: dict) -> str:
    users = [m["content"] for m in record["messages"] if m["role"] == "user"]
    first = users[0]
    # The task is stated at the start; the caps keep pasted documents and code cheap.
    task = task_of(" ".join(users[:2])[:TASK_CHARS])
    # Words already in the task phrase ("blog post") would only repeat it.
    topic = topic_words(first[:TOPIC_CHARS], " ".join(users)[: 4 * TOPIC_CHARS], exclude=frozenset(task.split()))
    if not topic:
        return f"{INTENT_PREFIX} {task}."
    phrase = topic[0] if len(topic) == 1 else ", ".join(topic[:-1]) + " and " + topic[-1]
    return f"{INTENT_PREFIX} {task}, touching on {phrase}."


def assign_intents(
    records: list[dict],
    source: str,
    *,
    column: str | None = None,
    endpoint=None,
    cache_path: Path | None = None,
    progress: bool = False,
) -> list[tuple[dict, Rejection]]:
    """Set `intent` and `intent_source` on every record; return the ones that got none."""
    failures: list[tuple[dict, Rejection]] = []
    if source == "heuristic":
        for record in tqdm(records, desc="heuristic intents", unit="conv", disable=not progress):
            record["intent"], record["intent_source"] = heuristic_intent(record), "heuristic"
    elif source == "column":
        for record in records:
            value = record["columns"].get(column)
            if isinstance(value, str) and value.strip():
                record["intent"], record["intent_source"] = value.strip(), "column"
            else:
                failures.append((record, Rejection("intent_missing", f"no text in column {column!r}")))
    elif source == "llm":
        from .llm_intents import llm_intents

        answers = llm_intents(records, endpoint, cache_path, progress=progress)
        for record in records:
            answer = answers.get(record["conversation_id"])
            if isinstance(answer, str) and answer.strip():
                record["intent"], record["intent_source"] = answer.strip(), f"llm:{endpoint.model}"
            else:
                failures.append((record, Rejection("intent_failed", str(answer) if answer else "no intent returned")))
    else:
        raise ValueError(f"unknown intent source {source!r}")
    return failures

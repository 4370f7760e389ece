"""WildChat-shaped corpora of any size, built from the bundled ShareGPT turns.

Each record has the `allenai/WildChat-1M` schema (conversation_hash, conversation with its
per-message fields, hashed_ip, country, language, toxic, redacted, turn, model, timestamp,
moderation lists), 1 to 4 user turns, and about 4 KB of JSON, like the real corpus. The
user turns are made of sentences drawn from ShareGPT's user turns; a record whose user
text prep's own duplicate keys (`dedup.DedupKeys`, the default threshold) would match with
an earlier record's is drawn again, so every record survives the exact and near-duplicate
filters. Users (hashed IPs) have many conversations each, skewed like real logs. About 2%
are flagged toxic (prep's toxic filter removes those).

    python bench/prep_corpus.py 100000 out/wildchat-100k.jsonl
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from pathlib import Path

from userlm.data_prep.dedup import DedupKeys, DuplicateIndex, exact_key, user_text

SENTENCE = re.compile(r"(?<=[.!?])\s+")
COUNTRIES = [
    "United States",
    "China",
    "Russia",
    "India",
    "United Kingdom",
    "Germany",
    "France",
    "Brazil",
    "Canada",
    "Japan",
]
MODELS = ["gpt-3.5-turbo-0301", "gpt-3.5-turbo-0613", "gpt-4-0314"]
CATEGORIES = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "self-harm",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]


def sharegpt_pools(limit: int = 60_000) -> tuple[list[str], list[str]]:
    """Sentences of ShareGPT user turns, and ShareGPT assistant turns (cut to 1,200 characters)."""
    from userlm.data_prep.reading import Rejection, read_file
    from userlm.defaults import sharegpt_path

    sentences: dict[str, None] = {}
    answers: list[str] = []
    for _, record in read_file(sharegpt_path()):
        if isinstance(record, Rejection) or not isinstance(record.get("conversations"), list):
            continue
        for turn in record["conversations"]:
            text = turn.get("value") or ""
            if turn.get("from") in ("human", "user"):
                for sentence in SENTENCE.split(" ".join(text.split())):
                    if 25 <= len(sentence) <= 200 and sentence.isascii():
                        sentences[sentence] = None
            elif len(text) > 80 and text.isascii():
                answers.append(text[:1200])
        if len(sentences) >= limit and len(answers) >= limit:
            break
    return list(sentences), answers


def moderation(rng: random.Random, flagged: bool) -> dict:
    return {
        "categories": {c: False for c in CATEGORIES},
        "category_scores": {c: round(rng.random() / 1000, 6) for c in CATEGORIES},
        "flagged": flagged,
    }


def user_turns(rng: random.Random, sentences: list[str], index: DuplicateIndex, keys: DedupKeys) -> list[str]:
    """1 to 4 user turns of 1 to 3 sentences that no earlier record duplicates."""
    while True:
        turns = [" ".join(rng.choice(sentences) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 4))]
        text = user_text({"messages": [{"role": "user", "content": turn} for turn in turns]})
        if index.check(exact_key(text), keys.near_keys(text)) is None:
            return turns


def records(count: int, seed: int = 0):
    rng = random.Random(seed)
    sentences, answers = sharegpt_pools()
    keys = DedupKeys(0.9)
    index = DuplicateIndex(len(keys.bands))
    users = max(1, count // 4)
    for number in range(count):
        user = int(users * rng.random() ** 2)  # a few heavy users, many light ones
        hashed_ip = hashlib.sha256(f"user-{user}".encode()).hexdigest()
        country = COUNTRIES[user % len(COUNTRIES)]
        toxic = rng.random() < 0.02
        contents = user_turns(rng, sentences, index, keys)
        turns = len(contents)
        conversation = []
        for turn, content in enumerate(contents):
            timestamp = (
                f"2023-{rng.randint(4, 12):02d}-{rng.randint(1, 28):02d} "
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
            )
            common = {"language": "English", "redacted": False, "toxic": toxic, "turn_identifier": number * 4 + turn}
            conversation.append(
                {
                    "content": content,
                    "country": country,
                    "hashed_ip": hashed_ip,
                    "header": {"accept-language": "en-US,en;q=0.9"},
                    "role": "user",
                    "state": None,
                    "timestamp": None,
                    **common,
                }
            )
            conversation.append(
                {
                    "content": rng.choice(answers)[: rng.randint(150, 700)],
                    "country": None,
                    "hashed_ip": None,
                    "header": None,
                    "role": "assistant",
                    "state": None,
                    "timestamp": timestamp,
                    **common,
                }
            )
        yield {
            "conversation_hash": hashlib.md5(f"{seed}-{number}".encode()).hexdigest(),
            "model": MODELS[number % len(MODELS)],
            "timestamp": conversation[-1]["timestamp"],
            "conversation": conversation,
            "turn": turns,
            "language": "English",
            "openai_moderation": [moderation(rng, toxic) for _ in range(turns)],
            "toxic": toxic,
            "redacted": False,
            "state": None,
            "country": country,
            "hashed_ip": hashed_ip,
        }


def write_corpus(count: int, path: Path, seed: int = 0) -> Path:
    """A JSONL corpus of `count` records at `path` (kept, and reused when already complete)."""
    path = Path(path)
    done = path.with_name(path.name + ".complete")
    if path.exists() and done.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as sink:
        for record in records(count, seed):
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    done.write_text(str(count))
    return path


if __name__ == "__main__":
    write_corpus(int(sys.argv[1]), Path(sys.argv[2]))

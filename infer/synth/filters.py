"""Which simulated conversations become training examples for an assistant, and why the others do not.

Each conversation gets one reason or None (kept), checked in this order:
    broken              the simulator or the assistant failed (simulator_error, assistant_error)
    guardrail_fallback  a turn the guardrails rejected every draft of: the conversation ended
                        (guardrails_exhausted) or the last draft was kept anyway (fallback "keep")
    not_ended           the user did not end it (it hit max_turns), when ending is required
    too_short           fewer user turns than the minimum, the turn that only leaves not counted
    judged_unsuccessful the judge said it did not succeed
    unjudged            the judge gave no verdict (its request failed or its answer had no YES or NO)
    exact_duplicate     its text equals a kept conversation's, up to case, punctuation and spacing
    near_duplicate      its MinHash Jaccard similarity with a kept one reaches the threshold
The judge is asked only about conversations that passed the checks before it; duplicates are
checked last, in job order, so the first of a group of duplicates is the one kept.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from userlm.flipped.format import END_MARKER

REASONS = (
    "broken",
    "guardrail_fallback",
    "not_ended",
    "too_short",
    "judged_unsuccessful",
    "unjudged",
    "exact_duplicate",
    "near_duplicate",
)
NON_WORD = re.compile(r"[\W_]+")
SHINGLE_WORDS = 3
NUM_PERM = 128


def filter_conversations(
    records: list[dict],
    *,
    min_user_turns: int,
    require_user_ended: bool,
    near_duplicate: float,
    judge: Callable[[list[dict]], dict[str, dict]] | None = None,
) -> dict[str, str | None]:
    """Each conversation's reason to be dropped, or None when it is kept, by conversation id.
    `judge` gives the verdicts ({"success": bool | None, ...}) of the conversations passed to it by id."""
    reasons = {
        r["conversation_id"]: outcome_reason(r, min_user_turns=min_user_turns, require_user_ended=require_user_ended)
        for r in records
    }
    if judge is not None:
        verdicts = judge([r for r in records if reasons[r["conversation_id"]] is None])
        reasons.update({i: judge_reason(v) for i, v in verdicts.items()})
    duplicates = Duplicates(near_duplicate)
    for record in records:
        if reasons[record["conversation_id"]] is None:
            reasons[record["conversation_id"]] = duplicates.reason(record["conversation_id"], record)
    return reasons


def user_turn_count(record: dict) -> int:
    return sum(1 for t in record["turns"] if t["role"] == "user" and t["content"].strip() != END_MARKER)


def outcome_reason(record: dict, *, min_user_turns: int, require_user_ended: bool) -> str | None:
    """The first of the outcome checks the conversation fails, or None."""
    ended = record["termination_reason"]
    if ended in ("simulator_error", "assistant_error"):
        return "broken"
    fallback = any(e.get("guardrail") == "fallback" for t in record["turns"] for e in t.get("events", []))
    if ended == "guardrails_exhausted" or fallback:
        return "guardrail_fallback"
    if require_user_ended and ended != "user_ended":
        return "not_ended"
    if user_turn_count(record) < min_user_turns:
        return "too_short"
    return None


def judge_reason(verdict: dict) -> str | None:
    if verdict["success"] is None:
        return "unjudged"
    return None if verdict["success"] else "judged_unsuccessful"


def normalised_text(record: dict) -> str:
    """Every turn but the leaving one, lowercased, punctuation and whitespace runs made one space."""
    text = " ".join(t["content"] for t in record["turns"] if t["content"].strip() != END_MARKER)
    return NON_WORD.sub(" ", text.lower()).strip()


class Duplicates:
    """Exact duplicates by a digest of the normalised text; near ones by datasketch's MinHashLSH over word
    3-grams. Used directly rather than through data_prep/dedup.py, whose streaming keys serve a million
    logs in worker processes; a synthetic set fits one in-memory index."""

    def __init__(self, threshold: float):
        from datasketch import MinHashLSH

        self.exact: set[bytes] = set()
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM) if threshold > 0 else None

    def reason(self, key: str, record: dict) -> str | None:
        """ "exact_duplicate", "near_duplicate", or None: the conversation is kept and remembered under `key`."""
        text = normalised_text(record)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in self.exact:
            return "exact_duplicate"
        self.exact.add(digest)
        if self.lsh is None:
            return None
        signature = minhash(text)
        if self.lsh.query(signature):
            return "near_duplicate"
        self.lsh.insert(key, signature)
        return None


def minhash(text: str):
    from datasketch import MinHash

    words = text.split()
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    signature = MinHash(num_perm=NUM_PERM)
    signature.update_batch([s.encode() for s in shingles])
    return signature

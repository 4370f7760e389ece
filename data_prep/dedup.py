"""Exact and near-duplicate removal on normalised user text (DESIGN.md 4.2).

The user's side is what a simulator learns, so two logs whose user turns match are one
example, whatever the assistant answered. The first occurrence is kept.
"""

from __future__ import annotations

import hashlib
import re
import zlib

from tqdm.auto import tqdm

NON_WORD = re.compile(r"[\W_]+")
SHINGLE_WORDS = 3
# MinHash cost grows with the shingle count; the first words of a conversation decide
# whether two logs are the same one.
MAX_WORDS = 600


def user_text(record: dict) -> str:
    """Lowercased user turns with punctuation and whitespace runs collapsed to one space."""
    text = " ".join(m["content"] for m in record["messages"] if m["role"] == "user")
    return NON_WORD.sub(" ", text.lower()).strip()


def exact(texts: list[str]) -> tuple[list[int], list[int]]:
    """Indices kept and removed: a record whose normalised user text was seen before is removed."""
    seen: set[bytes] = set()
    kept, removed = [], []
    for i, text in enumerate(texts):
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in seen:
            removed.append(i)
        else:
            seen.add(digest)
            kept.append(i)
    return kept, removed


def shingles(text: str) -> set[bytes]:
    words = text.split()[:MAX_WORDS]
    if len(words) <= SHINGLE_WORDS:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)}


def near(
    texts: list[str], *, threshold: float, num_perm: int = 32, progress: bool = False
) -> tuple[list[int], list[int]]:
    """Indices kept and removed by MinHash LSH: a text whose estimated Jaccard similarity
    to an earlier kept one reaches `threshold` is removed."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    # Drawing the permutations is costlier than hashing a text: draw them once.
    template = MinHash(num_perm=num_perm)
    kept, removed = [], []
    for i, text in enumerate(tqdm(texts, desc="near-duplicates", unit="conv", disable=not progress)):
        # crc32 is stable across runs (unlike hash()) and much cheaper than the default sha1.
        signature = MinHash(num_perm=num_perm, hashfunc=zlib.crc32, permutations=template.permutations, scheme=template.scheme)
        signature.update_batch(list(shingles(text)))
        signature = LeanMinHash(signature)
        if lsh.query(signature):
            removed.append(i)
        else:
            lsh.insert(str(i), signature)
            kept.append(i)
    return kept, removed

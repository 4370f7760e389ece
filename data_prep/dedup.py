"""Exact and near-duplicate removal on normalised user text (docs/design.md#filters).

The user's side is what a simulator learns, so two logs whose user turns match are one
example, whatever the assistant answered. The first occurrence is kept.

The work is split in two so that it streams: `DedupKeys` turns one record into small
keys (a 16-byte digest of its user text, and one 8-byte hash per MinHash LSH band),
in any worker process; `DuplicateIndex` then walks every record's keys in input order in
one process, keeping only the keys of the records kept so far. Holding keys instead of
texts or signatures is what keeps a corpus of a million conversations within a few
hundred megabytes.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from functools import lru_cache

NON_WORD = re.compile(r"[\W_]+")
SHINGLE_WORDS = 3
# MinHash cost grows with the shingle count; the first words of a conversation decide
# whether two logs are the same one.
MAX_WORDS = 600
NUM_PERM = 32


def user_text(record: dict) -> str:
    """Lowercased user turns with punctuation and whitespace runs collapsed to one space."""
    text = " ".join(m["content"] for m in record["messages"] if m["role"] == "user")
    return NON_WORD.sub(" ", text.lower()).strip()


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def shingles(text: str) -> set[bytes]:
    words = text.split()[:MAX_WORDS]
    if len(words) <= SHINGLE_WORDS:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)}


class DedupKeys:
    """The exact key and the LSH band keys of a text, for a near-duplicate threshold.

    The signatures are datasketch's MinHash and the bands are the ones its MinHashLSH
    picks for the threshold, so records collide exactly when they would in a MinHashLSH.
    Each band is kept as an 8-byte hash of its values rather than as MinHashLSH's
    bucket of keys: MinHashLSH holds a Python list and key per record per band, about
    1 KB a record, too much for a million records in one process.
    """

    def __init__(self, threshold: float):
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        self.bands = MinHashLSH(threshold=threshold, num_perm=NUM_PERM).hashranges if threshold else []
        # Drawing the permutations is costlier than hashing a text: draw them once.
        self.template = MinHash(num_perm=NUM_PERM)

    def near_keys(self, text: str) -> list[int]:
        """One hash per LSH band of the text's MinHash signature."""
        from datasketch import MinHash

        # crc32 is stable across runs (unlike hash()) and much cheaper than the default sha1.
        signature = MinHash(
            num_perm=NUM_PERM, hashfunc=zlib.crc32, permutations=self.template.permutations, scheme=self.template.scheme
        )
        signature.update_batch(list(shingles(text)))
        values = signature.hashvalues
        return [
            int.from_bytes(hashlib.blake2b(values[start:end].tobytes(), digest_size=8).digest(), "little")
            for start, end in self.bands
        ]


@lru_cache(maxsize=2)
def dedup_keys(threshold: float) -> DedupKeys:
    """One DedupKeys per process and threshold."""
    return DedupKeys(threshold)


class DuplicateIndex:
    """Walks records in input order and says which repeat an earlier kept one."""

    def __init__(self, bands: int):
        self.exact: set[bytes] = set()
        # One set per band: a record is a near duplicate when any band of it matches the
        # same band of a kept record (MinHashLSH's candidate rule).
        self.near: list[set[int]] = [set() for _ in range(bands)]

    def check(self, exact: bytes | None, near: list[int] | None) -> str | None:
        """ "exact_duplicate", "near_duplicate" or None (kept: its keys are remembered)."""
        if exact is not None:
            if exact in self.exact:
                return "exact_duplicate"
            self.exact.add(exact)
        if near:
            if any(key in band for key, band in zip(near, self.near)):
                return "near_duplicate"
            for key, band in zip(near, self.near):
                band.add(key)
        return None

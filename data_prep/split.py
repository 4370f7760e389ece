"""The user-level split (docs/design.md#the-user-split): a stable hash of the user decides the split, so
no user (and no part of one ShareGPT chat) lands in two splits. Being a function of the
user alone, it holds over the whole corpus with no global step: any process can split any
record on its own."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")


def split_of(record: dict, shares: tuple[float, float, float]) -> str:
    """The split of a record, from sha256 of its user_id (its conversation_id when null)."""
    key = record["user_id"] if record["user_id"] is not None else record["conversation_id"]
    point = int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "big") / 2**64
    bound = 0.0
    for name, share in zip(SPLITS, shares):
        bound += share
        if point < bound:
            return name
    return SPLITS[-1]

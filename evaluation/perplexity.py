"""Perplexity of real user turns, with and without the intent (docs/design.md#metrics).

Token ids and the loss mask come from `flipped.templates.tokenize_sample`, the
function training uses, so the tokens scored here are exactly the tokens trained on:
the target user turn and its end-of-turn token. "Without intent" empties the system
message (the intent and any persona) and scores the same targets.
"""

from __future__ import annotations

import math

from userlm.flipped.templates import FlippedTemplate, tokenize_sample

from .forward import logprobs_at


def without_intent(sample: dict) -> dict:
    """The same sample with the system message's content emptied.

    Emptied rather than removed: a first-turn prompt holds only the system message, and
    transformers refuses to render an empty conversation.
    """
    return {**sample, "prompt": [{**m, "content": ""} if m["role"] == "system" else m for m in sample["prompt"]]}


def completion_nll(
    model,
    tokenizer,
    template: FlippedTemplate,
    samples: list[dict],
    *,
    batch_size: int = 4,
    progress: bool = True,
    desc: str = "perplexity",
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood in nats, number of scored tokens) of each sample's completion."""
    encoded = [tokenize_sample(tokenizer, template, s) for s in samples]
    rows = [e["input_ids"] for e in encoded]
    # Position t predicts token t+1, as in the causal-LM loss training uses.
    queries = [
        [(p - 1, ids[p]) for p, scored in enumerate(e["completion_mask"]) if scored] for ids, e in zip(rows, encoded)
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored = logprobs_at(model, rows, queries, pad_id=pad_id, batch_size=batch_size, progress=progress, desc=desc)
    return [(-sum(values), len(values)) for values in scored]


def perplexity(nlls: list[tuple[float, int]]) -> float:
    """exp(total NLL / total scored tokens): token-level perplexity over all samples pooled."""
    total_tokens = sum(n for _, n in nlls)
    if total_tokens == 0:
        raise ValueError("Perplexity needs at least one scored token.")
    return math.exp(sum(nll for nll, _ in nlls) / total_tokens)

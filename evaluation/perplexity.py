"""Perplexity of real user turns, with and without the intent (DESIGN.md 7).

Token ids and the loss mask come from `data_prep.templates.tokenize_sample`, the
function training uses, so the tokens scored here are exactly the tokens trained on:
the target user turn and its end-of-turn token. "Without intent" empties the system
message (the intent and any persona) and scores the same targets.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from userlm.data_prep.templates import FlippedTemplate, tokenize_sample


def without_intent(sample: dict) -> dict:
    """The same sample with the system message's content emptied.

    Emptied rather than removed: a first-turn prompt holds only the system message, and
    transformers refuses to render an empty conversation.
    """
    return {**sample, "prompt": [{**m, "content": ""} if m["role"] == "system" else m for m in sample["prompt"]]}


@torch.no_grad()
def completion_nll(model, tokenizer, template: FlippedTemplate, samples: list[dict], *, batch_size: int = 4, progress: bool = True, desc: str = "perplexity") -> list[tuple[float, int]]:
    """(summed negative log-likelihood in nats, number of scored tokens) of each sample's completion."""
    encoded = [tokenize_sample(tokenizer, template, s) for s in samples]
    # Longest first, so padding within a batch stays small and the first batch shows the memory peak.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(samples)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with tqdm(total=len(samples), desc=desc, unit="sample", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = [encoded[i] for i in order[start : start + batch_size]]
            width = max(len(e["input_ids"]) for e in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, e in enumerate(batch):
                # Left padding puts every completion at the end of its row, so only the last
                # `keep` positions need logits (the full-vocabulary output dominates memory).
                n = len(e["input_ids"])
                ids[row, width - n :] = torch.tensor(e["input_ids"])
                attention[row, width - n :] = 1
                mask[row, width - n :] = torch.tensor(e["completion_mask"], dtype=torch.bool)
            keep = min(width, max(sum(e["completion_mask"]) for e in batch) + 1)
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device), logits_to_keep=keep
            ).logits.float()
            # Position t predicts token t+1, as in the causal-LM loss training uses.
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = ids[:, width - keep + 1 :].to(device)
            token_nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            scored = mask[:, width - keep + 1 :].to(device)
            for row, index in enumerate(order[start : start + batch_size]):
                results[index] = (float(token_nll[row][scored[row]].sum()), int(scored[row].sum()))
            bar.update(len(batch))
    return results


def perplexity(nlls: list[tuple[float, int]]) -> float:
    """exp(total NLL / total scored tokens): token-level perplexity over all samples pooled."""
    total_tokens = sum(n for _, n in nlls)
    if total_tokens == 0:
        raise ValueError("Perplexity needs at least one scored token.")
    return math.exp(sum(nll for nll, _ in nlls) / total_tokens)


def sample_length(tokenizer, template: FlippedTemplate, sample: dict) -> int:
    """Tokens in prompt + completion, as the model sees them."""
    return len(tokenize_sample(tokenizer, template, sample)["input_ids"])

"""Teacher-forced log-probabilities: the one batched forward pass under perplexity and the
probability of ending.

A query (position q, token t) of a row asks for log P(t | row[:q + 1]): the model's
distribution after reading the row up to and including position q, whatever token the
row itself holds next. Perplexity asks for the row's own next tokens; the probability of
ending asks for the end marker at positions where the real user went on writing.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def logprobs_at(
    model,
    rows: list[list[int]],
    queries: list[list[tuple[int, int]]],
    *,
    pad_id: int,
    batch_size: int = 4,
    progress: bool = True,
    desc: str = "scoring",
    top_p: float | None = None,
) -> list[list]:
    """For each row, the log-probability of each of its (position, token) queries, in query order.

    With `top_p`, each value is a pair: the log-probability, and the probability that sampling
    at temperature 1 with that top-p draws the token (`nucleus_probability`)."""
    # Longest first, so padding within a batch stays small and the first batch shows the memory peak.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    results: list[list[float]] = [[] for _ in rows]
    device = next(model.parameters()).device
    with tqdm(total=len(rows), desc=desc, unit="row", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(rows[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for line, i in enumerate(batch):
                ids[line, width - len(rows[i]) :] = torch.tensor(rows[i])  # left padding
                attention[line, width - len(rows[i]) :] = 1
            # Logits only where a query reads them: the full-vocabulary output dominates memory.
            wanted = sorted({width - len(rows[i]) + q for i in batch for q, _ in queries[i]})
            if not wanted:
                bar.update(len(batch))
                continue
            column = {p: c for c, p in enumerate(wanted)}
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                position_ids=positions.to(device),
                logits_to_keep=torch.tensor(wanted, device=device),
            ).logits
            lines = [line for line, i in enumerate(batch) for _ in queries[i]]
            columns = [column[width - len(rows[i]) + q] for i in batch for q, _ in queries[i]]
            tokens = torch.tensor([t for i in batch for _, t in queries[i]], device=device)
            log_probs = torch.log_softmax(logits[lines, columns].float(), dim=-1)
            values = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
            if top_p is not None:
                values = list(zip(values, nucleus_probability(log_probs.exp(), tokens, top_p).tolist()))
            for i in batch:
                results[i], values = values[: len(queries[i])], values[len(queries[i]) :]
            bar.update(len(batch))
    return results


def nucleus_probability(probs: torch.Tensor, tokens: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row, the probability that top-p sampling draws `tokens[row]`, as infer/sampling.py samples:
    the smallest prefix of the tokens sorted by probability whose mass reaches top_p is kept and
    renormalised; a token outside it is never drawn."""
    ordered = probs.sort(dim=-1, descending=True).values
    kept_mass = (ordered * ((ordered.cumsum(-1) - ordered) < top_p)).sum(-1)
    p = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    # Inside the prefix while the likelier tokens hold less than top_p.
    likelier = (probs * (probs > p.unsqueeze(-1))).sum(-1)
    return torch.where(likelier < top_p, p / kept_mass, torch.zeros_like(p))

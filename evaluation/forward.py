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
def logprobs_at(model, rows: list[list[int]], queries: list[list[tuple[int, int]]], *, pad_id: int, batch_size: int = 4,
                progress: bool = True, desc: str = "scoring") -> list[list[float]]:
    """For each row, the log-probability of each of its (position, token) queries, in query order."""
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
                input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                logits_to_keep=torch.tensor(wanted, device=device),
            ).logits
            lines = [line for line, i in enumerate(batch) for _ in queries[i]]
            columns = [column[width - len(rows[i]) + q] for i in batch for q, _ in queries[i]]
            tokens = torch.tensor([t for i in batch for _, t in queries[i]], device=device)
            picked = torch.log_softmax(logits[lines, columns].float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            values = picked.tolist()
            for i in batch:
                results[i], values = values[: len(queries[i])], values[len(queries[i]) :]
            bar.update(len(batch))
    return results

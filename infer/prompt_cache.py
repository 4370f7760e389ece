"""Prompts are read once: their KV cache is kept and every draft decodes from it.

A turn's drafts share their prompt: the first draft of every row, and the redraws of the
rows the guardrails rejected. And a conversation's next prompt begins with its previous
one (the previous prompt, the user turn, the assistant's reply, a new user header). So the
simulator prefills each prompt's tokens but the last once (`PromptCache.prefill`), into a
`PromptBatch`; each `generate` call then starts from a copy of the rows it needs
(`PromptBatch.inputs`) and computes only the last prompt token and the new ones.

Across calls, the prefilled rows stay in a store bounded in bytes (least recently used go
first); a new prompt starts from the stored row sharing its longest token prefix and
prefills only the rest. A row's cached part keeps the positions it was computed at, so in
a batch its keys sit left of a gap of padding and then its new tokens: the attention mask
covers the gap, and positions come from the mask as `generate` computes them (cumulative
sum), so the cache is what one prefill of the whole prompt gives, up to float rounding.
Only transformers' own `DynamicCache` and the model's forward are used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers import DynamicCache

# The store's default size: about 5,000 tokens of an 8B Llama in bf16, 23,000 of SmolLM2-135M in fp32.
DEFAULT_BUDGET_BYTES = 1 << 30


def nbytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


def cache_keyword(model) -> str:
    """`cache` since transformers 5.24; `past_key_values` before."""
    import inspect

    base = (
        model.get_base_model() if hasattr(model, "get_base_model") else model
    )  # a PEFT model's forward takes **kwargs
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@dataclass
class PromptBatch:
    """Prompts prefilled but for their last token: `ids` and `mask` [rows, width + 1] (the last
    column is each prompt's last token), and per layer the keys and values of the first `width` columns."""

    ids: torch.Tensor
    mask: torch.Tensor
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    config: object

    def inputs(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, DynamicCache | None]:
        """input_ids, attention_mask and a fresh cache (generate extends it) for these rows, repeats allowed.
        Columns that none of them uses (padding) are left out."""
        index = torch.tensor(rows, device=self.ids.device)
        ids, mask = self.ids[index], self.mask[index]
        keep = mask.any(0)
        keep[-1] = True
        ids, mask = ids[:, keep], mask[:, keep]
        if not self.layers or mask.shape[1] == 1:
            return ids, mask, None
        columns = keep[:-1].nonzero().flatten()
        data = [(k[index][:, :, columns], v[index][:, :, columns]) for k, v in self.layers]
        return ids, mask, DynamicCache(ddp_cache_data=data, config=self.config)


class PromptCache:
    def __init__(self, model, pad_token_id: int, *, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.model = model
        self.pad_token_id = pad_token_id
        self.budget_bytes = budget_bytes
        self.cache_keyword = cache_keyword(model)
        # tokens -> per layer (keys, values) [heads, len(tokens), head_dim], least recently used first
        self._store: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = {"prompt_tokens": 0, "reused_tokens": 0}

    def clear(self) -> None:
        with self._lock:
            self._store.clear()
            self._bytes = 0

    @torch.no_grad()
    def prefill(self, prompts: list[list[int]]) -> tuple[PromptBatch, list[int]]:
        """The prompts' batch, and for every prompt its row in it (equal prompts share a row)."""
        unique: dict[tuple[int, ...], int] = {}
        row_of = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        token_lists = list(unique)
        device = self.model.device
        with self._lock:
            found = [self._longest(tokens[:-1]) for tokens in token_lists]
        reused = [len(entry_tokens) for entry_tokens, _ in found]
        suffixes = [tokens[r:-1] for tokens, r in zip(token_lists, reused)]
        cached_width, new_width = max(reused), max(map(len, suffixes))
        width = cached_width + new_width
        rows = len(token_lists)
        self.stats["prompt_tokens"] += sum(len(t) for t in token_lists)
        self.stats["reused_tokens"] += sum(reused)

        # Layout of a row: [padding | its cached tokens | padding | its new tokens | its last token].
        ids = torch.full((rows, width + 1), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((rows, width + 1), dtype=torch.long, device=device)
        for row, (tokens, r, suffix) in enumerate(zip(token_lists, reused, suffixes)):
            if r:
                ids[row, cached_width - r : cached_width] = torch.tensor(tokens[:r])
                mask[row, cached_width - r : cached_width] = 1
            if suffix:
                ids[row, width - len(suffix) : width] = torch.tensor(suffix)
                mask[row, width - len(suffix) : width] = 1
            ids[row, width] = tokens[-1]
            mask[row, width] = 1

        cache = None
        if cached_width:
            layers = []
            template = next(parts for _, parts in found if parts)
            for layer, (k0, v0) in enumerate(template):
                keys = k0.new_zeros((rows, k0.shape[0], cached_width, k0.shape[2]))
                values = v0.new_zeros((rows, v0.shape[0], cached_width, v0.shape[2]))
                for row, ((_, parts), r) in enumerate(zip(found, reused)):
                    if r:
                        keys[row, :, cached_width - r :] = parts[layer][0][:, :r]
                        values[row, :, cached_width - r :] = parts[layer][1][:, :r]
                layers.append((keys, values))
            cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        if new_width:
            if cache is None:
                cache = DynamicCache(config=self.model.config)
            full_mask = mask[:, :width]
            positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, cached_width:]
            self.model(
                input_ids=ids[:, cached_width:width],
                attention_mask=full_mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_keyword: cache},
            )
        layers = [(layer.keys, layer.values) for layer in cache.layers] if cache is not None else []
        batch = PromptBatch(ids, mask, layers, self.model.config)
        if layers:
            self._keep(token_lists, mask[:, :width].bool(), layers)
        return batch, row_of

    def _longest(self, tokens: tuple[int, ...]) -> tuple[tuple[int, ...], list | None]:
        """The stored row sharing the longest prefix with `tokens`: (that prefix, its layers), or ((), None)."""
        best, best_parts = 0, None
        for stored, parts in self._store.items():
            n = min(len(stored), len(tokens))
            if n <= best or stored[: best + 1] != tokens[: best + 1]:
                continue
            shared = next((i for i in range(n) if stored[i] != tokens[i]), n)
            if shared > best:
                best, best_parts, best_key = shared, parts, stored
        if best_parts is None:
            return (), None
        self._store.move_to_end(best_key)
        return tokens[:best], best_parts

    def _keep(self, token_lists, valid: torch.Tensor, layers) -> None:
        with self._lock:
            for row, tokens in enumerate(token_lists):
                prefix = tokens[:-1]
                if not prefix or prefix in self._store:
                    continue
                columns = valid[row].nonzero().flatten()
                parts = [(k[row][:, columns].clone(), v[row][:, columns].clone()) for k, v in layers]
                size = nbytes(parts)
                if size > self.budget_bytes:
                    continue
                # A stored row that this one extends can never be the longest match again.
                for stored in [s for s in self._store if len(s) < len(prefix) and prefix[: len(s)] == s]:
                    self._drop(stored)
                self._store[prefix] = parts
                self._bytes += size
                while self._bytes > self.budget_bytes:
                    self._drop(next(iter(self._store)))

    def _drop(self, tokens) -> None:
        self._bytes -= nbytes(self._store.pop(tokens))

"""Rows decoding side by side from prefilled prompts, each of which can start over from its
prompt, or leave, between two steps.

`model.generate` decodes a fixed set of rows until the longest has ended, so a turn whose
draft the guardrails rejected waited for that whole call, then for a second call of its
redraws alone: a batch cost one call per attempt of its unluckiest row, each call as long
as its longest draft, and a decode step costs nearly as much for 2 rows as for 16 (on a
CPU it reads all the weights). Here a rejected row starts its next attempt at the next step,
beside the rows still decoding, and a row whose turn is done leaves the batch.

Layout: the first `width` cache columns are the prompts' (`PromptBatch`: a row's padding,
cached and new tokens), then one column a step. A row that starts over gets its prompt's
columns back and masks every column after them; the keys left there are never attended to.
Positions come from the mask (cumulative sum), as in `generate` and the prompt cache.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .prompt_cache import PromptBatch


class Decoder:
    def __init__(self, model, batch: PromptBatch, prompt_rows: list[int], cache_keyword: str):
        self.model, self.batch, self.cache_keyword = model, batch, cache_keyword
        self.width = batch.mask.shape[1] - 1
        index = torch.tensor(prompt_rows, device=batch.ids.device)
        self.mask = batch.mask[index, :-1]
        self.next = batch.ids[index, -1]  # each row's next input: its prompt's last token, then its draws
        layers = [(k[index], v[index]) for k, v in batch.layers]
        self.cache = (
            DynamicCache(ddp_cache_data=layers, config=batch.config) if layers else DynamicCache(config=batch.config)
        )

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Every row's next-token logits [rows, vocab]; `feed` then gives the rows their tokens."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        output = self.model(
            input_ids=self.next[:, None],
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_keyword: self.cache},
        )
        return output.logits[:, -1]

    def feed(self, tokens: list[int]) -> None:
        self.next = torch.tensor(tokens, dtype=self.next.dtype, device=self.next.device)

    def restart(self, row: int, prompt_row: int) -> None:
        """Row `row` starts over from prompt `prompt_row` of the batch at the next step."""
        self.mask[row] = 0
        self.mask[row, : self.width] = self.batch.mask[prompt_row, :-1]
        for layer, (keys, values) in zip(self.cache.layers, self.batch.layers):
            layer.keys[row, :, : self.width] = keys[prompt_row]
            layer.values[row, :, : self.width] = values[prompt_row]
        self.next[row] = self.batch.ids[prompt_row, -1]

    def keep(self, rows: list[int]) -> None:
        """Only these rows go on, in this order."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask, self.next = self.mask[index], self.next[index]
        self.cache.batch_select_indices(index)

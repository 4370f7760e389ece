"""Per-row seeded sampling with token-level guardrails, plugged into `model.generate`.

`transformers` samples every row of a batch from one global random stream, so a
conversation's text would depend on which other conversations shared its batch. Here
each row draws from its own `torch.Generator`, seeded from the conversation's recorded
seed, and the processor hands `generate` a one-hot choice that greedy decoding keeps.
Temperature and top-p are therefore applied here (as `TemperatureLogitsWarper` and
`TopPLogitsWarper` would) instead of by `generate`.

Bans act at the draw: the row first draws from the full distribution; only when that
draw is a banned token (a banned first word, or the end marker before it is allowed) is
an event recorded and the token redrawn with the banned ids removed. So an event means
the guardrail changed what would have been sampled.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor, StoppingCriteria

# Tokens ranked before top-p is applied; a row whose top-p prefix is longer is sorted in full.
TOP_K_PREFILTER = 256


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from several integers (a conversation's seed, a turn, an attempt)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RowSampler(LogitsProcessor):
    def __init__(
        self,
        *,
        seeds: list[int],
        prompt_length: int,
        temperature: float,
        top_p: float,
        device: torch.device,
        first_word_mask: torch.Tensor | None = None,
        whitespace_ids: set[int] | None = None,
        end_token_id: int | None = None,
        end_banned: list[bool] | None = None,
        token_text=None,
        stop_ids: set[int] | None = None,
    ):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.prompt_length = prompt_length
        self.temperature = temperature
        self.top_p = top_p
        self.first_word_mask = first_word_mask
        self.whitespace_ids = whitespace_ids or set()
        self.end_token_id = end_token_id
        self.end_banned = end_banned or [False] * len(seeds)
        self.token_text = token_text
        self.at_first_word = [first_word_mask is not None] * len(seeds)
        self.events: list[list[dict]] = [[] for _ in seeds]
        # Rows whose draft has ended (a stop token, or `WordLimit`): `generate` pads them while
        # the others go on, so they draw nothing more (and record no event that would depend on them).
        self.stop_ids = stop_ids or set()
        self.done = [False] * len(seeds)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] > 0:
            for row, last in enumerate(generated[:, -1].tolist()):
                # The first word has begun once a token with visible text was generated.
                if self.at_first_word[row] and last not in self.whitespace_ids:
                    self.at_first_word[row] = False
                if last in self.stop_ids:
                    self.done[row] = True
        sorted_probs, sorted_ids = self._filtered(scores)
        choice = torch.full_like(scores, float("-inf"))
        for row, generator in enumerate(self.generators):
            if self.done[row]:
                choice[row, 0] = 0.0  # replaced by padding
                continue
            token = self._draw(sorted_probs[row], sorted_ids[row], generator)
            banned = self._banned(row, scores.shape[-1], scores.device)
            if banned is not None and banned[token]:
                self.events[row].append(self._event(row, token))
                probs, ids = self._filtered(scores[row : row + 1].masked_fill(banned, float("-inf")))
                token = self._draw(probs[0], ids[0], generator)
            choice[row, token] = 0.0
        return choice

    def _filtered(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities after temperature and top-p, sorted in descending order, with their ids."""
        if self.temperature == 0:
            probs = torch.zeros_like(scores).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)
        else:
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        # Sorting the whole vocabulary (49k for SmolLM2) for 16 rows took ~80 ms a step on 2 CPU
        # cores, about half a decode step of the model; a language model's top-p prefix nearly
        # always lies within the top few hundred tokens. Rows whose top-k mass falls short of
        # top_p are sorted in full, so the result is exact.
        k = min(TOP_K_PREFILTER, probs.shape[-1])
        top_probs, top_ids = probs.topk(k, dim=-1)
        sorted_probs = torch.zeros_like(probs)
        sorted_probs[:, :k] = top_probs
        sorted_ids = torch.zeros_like(probs, dtype=torch.long)
        sorted_ids[:, :k] = top_ids
        short = (top_probs.sum(-1) < self.top_p).nonzero().flatten()
        if len(short):
            sorted_probs[short], sorted_ids[short] = probs[short].sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token). The
        # zeros after the top k keep the vector full length, so `multinomial` consumes the row's
        # generator exactly as it did on the fully sorted vector.
        outside = (sorted_probs.cumsum(-1) - sorted_probs) >= self.top_p
        return sorted_probs.masked_fill(outside, 0.0), sorted_ids

    @staticmethod
    def _draw(sorted_probs: torch.Tensor, sorted_ids: torch.Tensor, generator: torch.Generator) -> int:
        return int(sorted_ids[torch.multinomial(sorted_probs, 1, generator=generator)])

    def _banned(self, row: int, vocab: int, device) -> torch.Tensor | None:
        banned = None
        if self.at_first_word[row]:
            banned = self.first_word_mask.clone()
        if self.end_banned[row] and self.end_token_id is not None:
            if banned is None:
                banned = torch.zeros(vocab, dtype=torch.bool, device=device)
            banned[self.end_token_id] = True
        return banned

    def _event(self, row: int, token: int) -> dict:
        if token == self.end_token_id and self.end_banned[row]:
            return {"guardrail": "end_too_early", "action": "redrawn"}
        return {"guardrail": "first_word", "action": "redrawn", "token": self.token_text(token)}


class WordLimit(StoppingCriteria):
    """Stops a row as soon as its draft has more than `max_words` words: it is rejected anyway.
    `done` (a `RowSampler`'s) learns which rows stopped."""

    def __init__(self, tokenizer, prompt_length: int, max_words: int, done: list[bool] | None = None):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.max_words = max_words
        self.done = done

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        over = [len(t.split()) > self.max_words for t in texts]
        if self.done is not None:
            for row, stop in enumerate(over):
                self.done[row] = self.done[row] or stop
        return torch.tensor(over, device=input_ids.device)

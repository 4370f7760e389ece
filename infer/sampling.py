"""Per-row seeded sampling with token-level guardrails, for the simulator's decode loop (`infer/decoding.py`).

`transformers` samples every row of a batch from one global random stream, so a
conversation's text would depend on which other conversations shared its batch. Here
each draft draws from its own `torch.Generator` (a `RowDraw`), seeded from the
conversation's recorded seed and the attempt, with temperature and top-p applied as
`TemperatureLogitsWarper` and `TopPLogitsWarper` would.

Bans act at the draw: the row first draws from the full distribution; only when that
draw is a banned token (a banned first word, or the end marker before it is allowed) is
an event recorded and the token redrawn with the banned ids removed. So an event means
the guardrail changed what would have been sampled.

End steering (`infer/turn_sampling.py`) acts before the draw. At a draft's first token its
P(end) is read from the raw logits (temperature 1, before any mask and bias); the bias is
added to the end marker's logit at every draw; a threshold either makes the end marker the
first token or removes it from every draw of the draft (no event: the tester asked for it).
"""

from __future__ import annotations

import hashlib
import math

import torch

from .turn_sampling import DEFAULT_SAMPLING, TurnSampling

# Tokens ranked before top-p is applied; a row whose top-p prefix is longer is sorted in full.
TOP_K_PREFILTER = 256


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from several integers (a conversation's seed, a turn, an attempt)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RowDraw:
    """One draft's draws: its own generator, whether its first word is still to come, whether
    the end marker is banned (by the guardrails, or by the threshold), the events its bans
    recorded, and its first token's P(end) before and after the bias."""

    def __init__(self, seed: int, *, device: torch.device, at_first_word: bool, end_banned: bool):
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.at_first_word = at_first_word
        self.end_banned = end_banned
        self.events: list[dict] = []
        self.at_first_token = True
        self.end_steered_off = False
        self.p_end: float | None = None
        self.p_end_steered: float | None = None


class RowSampler:
    """Draws the next token of every running draft from its logits, each with its own `RowDraw`."""

    def __init__(
        self,
        *,
        sampling: TurnSampling = DEFAULT_SAMPLING,
        device: torch.device,
        first_word_mask: torch.Tensor | None = None,
        whitespace_ids: set[int] | None = None,
        end_token_id: int | None = None,
        token_text=None,
    ):
        self.sampling = sampling
        self.temperature = sampling.temperature
        self.top_p = sampling.top_p
        self.device = device
        self.first_word_mask = first_word_mask
        self.whitespace_ids = whitespace_ids or set()
        self.end_token_id = end_token_id
        self.token_text = token_text

    def row(self, seed: int, end_banned: bool) -> RowDraw:
        return RowDraw(seed, device=self.device, at_first_word=self.first_word_mask is not None, end_banned=end_banned)

    def draw(self, scores: torch.Tensor, rows: list[RowDraw]) -> list[int]:
        """The next token of each row of `scores` [rows, vocab]."""
        scores, forced = self._steer(scores, rows)
        nucleus = self._nuclei(scores)
        tokens = []
        for i, row in enumerate(rows):
            if i in forced:  # the threshold says this user leaves now
                tokens.append(self.end_token_id)
                continue
            token = self._draw(*nucleus(i), row.generator)
            # The ban mask (a vocabulary's worth) is built only for the rare draw it changes.
            guardrail = self._guardrail_against(row, token)
            if guardrail is not None:
                event = {"guardrail": guardrail, "action": "redrawn"}
                row.events.append(event if guardrail == "end_too_early" else {**event, "token": self.token_text(token)})
                banned = self._banned(row, scores.shape[-1], scores.device)
                token = self._draw(
                    *self._nuclei(scores[i : i + 1].masked_fill(banned, float("-inf")))(0), row.generator
                )
            # The first word has begun once a token with visible text was drawn.
            if row.at_first_word and token not in self.whitespace_ids:
                row.at_first_word = False
            tokens.append(token)
        return tokens

    def _steer(self, scores: torch.Tensor, rows: list[RowDraw]) -> tuple[torch.Tensor, set[int]]:
        """Read P(end) at each row's first token, then apply the end steering: the scores to draw
        from, and the rows the threshold makes leave at once."""
        end = self.end_token_id
        firsts = [i for i, row in enumerate(rows) if row.at_first_token]
        for row in rows:
            row.at_first_token = False
        if end is None:
            return scores, set()
        forced = set()
        if firsts:
            log_p = torch.log_softmax(scores[firsts].float(), dim=-1)[:, end].tolist()
            for i, value in zip(firsts, log_p):
                row = rows[i]
                row.p_end = math.exp(value)
                row.p_end_steered = self.sampling.steered(row.p_end)
                leaves = self.sampling.leaves(row.p_end)
                if leaves and not row.end_banned:
                    forced.add(i)
                elif leaves is False:
                    row.end_steered_off = True
        off = [i for i, row in enumerate(rows) if row.end_steered_off]
        if self.sampling.end_bias or off:
            scores = scores.float().clone()
            scores[:, end] += self.sampling.end_bias
            scores[off, end] = float("-inf")
        return scores, forced

    def _nuclei(self, scores: torch.Tensor):
        """A function of a row: its top-p nucleus after temperature, as (probabilities, ids) in descending order."""
        if self.temperature == 0:
            probs = torch.zeros_like(scores).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)
        else:
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        # Sorting the whole vocabulary (49k for SmolLM2) for 16 rows took ~80 ms a step on 2 CPU
        # cores, about half a decode step of the model; a language model's top-p prefix nearly
        # always lies within the top few hundred tokens. Rows whose top-k mass falls short of
        # top_p are sorted in full, so the result is exact.
        k = min(TOP_K_PREFILTER, probs.shape[-1])
        sorted_probs, sorted_ids = probs.topk(k, dim=-1)
        short = (sorted_probs.sum(-1) < self.top_p).nonzero().flatten().tolist()
        full = {i: probs[i].sort(descending=True) for i in short}
        lengths = self._nucleus_lengths(sorted_probs)

        def nucleus(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            if i in full:
                p, ids = full[i]
                n = int(self._nucleus_lengths(p[None])[0])
                return p[:n], ids[:n]
            n = int(lengths[i])
            return sorted_probs[i, :n], sorted_ids[i, :n]

        return nucleus

    def _nucleus_lengths(self, sorted_probs: torch.Tensor) -> torch.Tensor:
        """The smallest prefix of each sorted row whose mass reaches top_p (always at least one token)."""
        return ((sorted_probs.cumsum(-1) - sorted_probs) < self.top_p).sum(-1)

    @staticmethod
    def _draw(probs: torch.Tensor, ids: torch.Tensor, generator: torch.Generator) -> int:
        # Drawn from the nucleus alone: `multinomial` draws one exponential per entry, and over the
        # whole vocabulary that cost 3-4 s of a 50 s serve bench run. A row's draw depends only on
        # its own nucleus and generator, so a seed gives the same text whatever shares the batch.
        return int(ids[torch.multinomial(probs, 1, generator=generator)])

    def _guardrail_against(self, row: RowDraw, token: int) -> str | None:
        """The guardrail that bans `token` for this row now, if any (`_banned` is its mask)."""
        if row.end_banned and token == self.end_token_id:
            return "end_too_early"
        if row.at_first_word and bool(self.first_word_mask[token]):
            return "first_word"
        return None

    def _banned(self, row: RowDraw, vocab: int, device) -> torch.Tensor:
        banned = None
        if row.at_first_word:
            banned = self.first_word_mask.clone()
        if row.end_banned and self.end_token_id is not None:
            if banned is None:
                banned = torch.zeros(vocab, dtype=torch.bool, device=device)
            banned[self.end_token_id] = True
        return banned

"""The user simulator: batched, seeded, optionally guarded generation of the next user turn.

    sim = UserSimulator.load("out/persona")                      # a `userlm train` folder
    sim = UserSimulator.load("default")                          # embedded SmolLM2, prompted (chatml)
    turns = sim.generate([prompt_a, prompt_b], guardrails=Guardrails(), seed=7)

A prompt is a flipped message list `[system, user, assistant, ...]` (a sample's `prompt`,
docs/design.md#flipped-samples); it is rendered with the checkpoint's own flipped template, which ends
with an open user turn. All prompts are generated together (left padding), in one decode
loop (`infer/decoding.py`): a draft the guardrails reject is redrawn at once, beside the
drafts still decoding, from its prompt's KV cache. Prompts' KV caches are
kept (`infer/prompt_cache.py`): a conversation's next prompt prefills only what its previous one lacked.
Every draft is read by the one draft parser (`flipped/drafts.py`), as in the
completions backend. A prompt that does not fit the model's context is refused before
anything is generated (`generate` raises; `generate_each` and `agenerate`, the loop's and
the server's entries, return the error in that prompt's place and generate the others).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from userlm.errors import UserError
from userlm.flipped.drafts import ParsedDraft, parse_draft
from userlm.flipped.format import END_MARKER, count_user_turns
from userlm.flipped.templates import FlippedTemplate, render

from .decoding import Decoder
from .guardrails import Guardrails, check_draft, first_word
from .loading import context_error, context_length, load_model_and_tokenizer, resolve_template, turn_end_ids
from .prompt_cache import DEFAULT_BUDGET_BYTES, PromptCache
from .sampling import RowDraw, RowSampler, derive_seed
from .turn_sampling import DEFAULT_SAMPLING, TurnSampling


@dataclass
class GeneratedTurn:
    # The user's words; the end marker alone when the user left without any.
    text: str
    # The user leaves after this turn (the end marker, alone or after their last words).
    is_end: bool
    events: list[dict] = field(default_factory=list)
    # Every draft was rejected and the "end" fallback applies: the turn must not be used.
    exhausted: bool = False
    attempts: int = 1
    # "length" when the accepted draft ran out of max_new_tokens before its turn ended.
    finish_reason: str = "stop"
    # P(end): the probability that the turn's first token is the end marker (the model's, at temperature 1,
    # before guardrails and bias; `infer/turn_sampling.py`); None where the model has no end marker or the
    # server gives no log-probabilities. `p_end_steered`: after end_bias, where one is set.
    p_end: float | None = None
    p_end_steered: float | None = None

    @classmethod
    def of(
        cls, draft: ParsedDraft, events: list[dict], attempts: int, finish_reason: str = "stop", **p_end
    ) -> GeneratedTurn:
        return cls(draft.text, draft.ended, events, attempts=attempts, finish_reason=finish_reason, **p_end)

    def end_probabilities(self) -> dict:
        """What a record or a response says of P(end): `p_end`, and `p_end_steered` where the bias changed it."""
        found = {"p_end": self.p_end}
        if self.p_end_steered is not None and self.p_end_steered != self.p_end:
            found["p_end_steered"] = self.p_end_steered
        return found


@dataclass
class Drafting:
    """A turn being drafted: what the decode loop (`UserSimulator._draft_all`) reads and updates."""

    prompt: list[dict]
    seed: int
    tokens: list[int]  # the rendered prompt's token ids
    events: list[dict] = field(default_factory=list)
    next_attempt: int = 1
    result: GeneratedTurn | None = None
    # The first attempt's P(end) before and after the bias (every attempt starts from the same prompt).
    p_end: dict = field(default_factory=dict)


@dataclass
class _Row:
    """A draft under way in the decode loop."""

    turn: Drafting
    attempt: int
    draw: RowDraw
    tokens: list[int] = field(default_factory=list)
    ended: bool = False


def row_seeds(seed: int | list[int], rows: int) -> list[int]:
    """One seed per row: `seed + i` for row i, or the given list, which must have one per row."""
    seeds = [seed + i for i in range(rows)] if isinstance(seed, int) else list(seed)
    if len(seeds) != rows:
        raise ValueError("Give one seed per prompt.")
    return seeds


def cut_at_stops(text: str, stop: tuple[str, ...]) -> str:
    """The text before the first of the caller's stop strings (OpenAI's `stop`)."""
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text


class UserSimulator:
    def __init__(
        self,
        model,
        tokenizer,
        template: FlippedTemplate,
        *,
        name: str = "",
        prompt_cache_bytes: int = DEFAULT_BUDGET_BYTES,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.name = name
        vocab = tokenizer.get_vocab()
        self.end_token_id = vocab.get(END_MARKER)
        self.eot_token_id = tokenizer.convert_tokens_to_ids(template.eot_token)
        # Every token that ends a turn, whichever end token the checkpoint's configs name.
        self.stop_token_ids = turn_end_ids(tokenizer, template, model.config, getattr(model, "generation_config", None))
        # Where a draft ends: any turn end, and the pad token (the stops the drafting has always used).
        self.draft_stop_ids = set(self.stop_token_ids) | {tokenizer.pad_token_id}
        self.context_length = context_length(model.config, tokenizer)
        self._token_texts: list[str] | None = None
        self._whitespace: set[int] | None = None
        self._first_word_masks: dict[tuple[str, ...], torch.Tensor] = {}
        # Prompts' KV caches, kept across calls (0 bytes keeps none beyond a call's own drafts).
        self.prompt_cache = PromptCache(model, tokenizer.pad_token_id, budget_bytes=prompt_cache_bytes)

    @classmethod
    def load(cls, path: str | Path, *, template: str | None = None, adapter: str | Path | None = None) -> UserSimulator:
        """Load a simulator; `template` names a flipped template for an ordinary instruct model."""
        model, tokenizer = load_model_and_tokenizer(path, adapter=adapter)
        return cls(model, tokenizer, resolve_template(tokenizer, template, path), name=str(path))

    @property
    def settings(self) -> dict:
        return {"backend": "local", "simulator": self.name, "template": self.template.name}

    def prompt_ids(self, prompt: list[dict]) -> list[int]:
        return self.tokenizer(render(self.tokenizer, self.template, prompt), add_special_tokens=False)["input_ids"]

    def prompt_tokens(self, prompt: list[dict]) -> int:
        return len(self.prompt_ids(prompt))

    def prompt_error(
        self, prompt: list[dict], max_new_tokens: int = DEFAULT_SAMPLING.max_new_tokens
    ) -> UserError | None:
        """The one sentence for a prompt that does not fit the context with room for the reply, else None."""
        return context_error(self.prompt_tokens(prompt), max_new_tokens, self.context_length)

    def generate_each(
        self,
        prompts: list[list[dict]],
        *,
        seed: int | list[int] = 0,
        guardrails: Guardrails | None = None,
        sampling: TurnSampling = DEFAULT_SAMPLING,
        stop: tuple[str, ...] = (),
        **fields,
    ) -> list[GeneratedTurn | Exception]:
        """`generate`, except that a prompt over the context gets its error in its place and the others their turns."""
        sampling = sampling.with_fields(**fields)
        turns = self.start(prompts, row_seeds(seed, len(prompts)), sampling.max_new_tokens)
        self._draft_all([t for t in turns if isinstance(t, Drafting)], guardrails, sampling, stop)
        return [t.result if isinstance(t, Drafting) else t for t in turns]

    def start(
        self, prompts: list[list[dict]], seeds: list[int], max_new_tokens: int = DEFAULT_SAMPLING.max_new_tokens
    ) -> list[Drafting | UserError]:
        """A turn to draft for every prompt, or the error of a prompt over the context."""
        turns: list[Drafting | UserError] = []
        for prompt, seed in zip(prompts, seeds):
            ids = self.prompt_ids(prompt)
            error = context_error(len(ids), max_new_tokens, self.context_length)
            turns.append(error if error is not None else Drafting(prompt, seed, ids))
        return turns

    async def agenerate(
        self,
        prompts: list[list[dict]],
        *,
        seed: int | list[int] = 0,
        guardrails: Guardrails | None = None,
        sampling: TurnSampling = DEFAULT_SAMPLING,
        stop: tuple[str, ...] = (),
    ) -> list[GeneratedTurn | Exception]:
        """`generate_each` for the simulation loop, which drives both backends the same way."""
        return self.generate_each(prompts, seed=seed, guardrails=guardrails, sampling=sampling, stop=stop)

    def generate(
        self,
        prompts: list[list[dict]],
        *,
        guardrails: Guardrails | None = None,
        seed: int | list[int] = 0,
        sampling: TurnSampling = DEFAULT_SAMPLING,
        stop: tuple[str, ...] = (),
        **fields,
    ) -> list[GeneratedTurn]:
        """The next user turn for every prompt. `seed` is one int (row i uses seed + i) or one per prompt;
        `fields` replace those of `sampling` (`max_new_tokens=8, temperature=0`); `stop` strings end a turn
        where they first appear. Raises UserError for a prompt over the context."""
        sampling = sampling.with_fields(**fields)
        turns = self.start(prompts, row_seeds(seed, len(prompts)), sampling.max_new_tokens)
        for turn in turns:
            if isinstance(turn, UserError):
                raise turn
        self._draft_all(turns, guardrails, sampling, stop)
        return [t.result for t in turns]

    def _draft_all(
        self, turns: list[Drafting], guardrails: Guardrails | None, sampling: TurnSampling, stop: tuple[str, ...]
    ) -> None:
        """Every turn drafted in one decode loop (`infer/decoding.py`) of at most `len(turns)` rows,
        until every turn is accepted or out of attempts. A row whose draft ends is checked at once;
        its slot goes, at the next step, to the next attempt of a turn still open: first to one
        with no draft under way, then to the one with the fewest (a rejected turn's later
        attempts drafted side by side, so its last draft need not wait for all the others).

        Attempt k of a turn draws with seed `derive_seed(seed, k)` and its own generator, and a
        turn's attempts are judged in order, the first accepted one winning (later ones are
        dropped unread): a turn is what drafting its attempts one by one alone would give,
        whichever rows shared the loop and whenever each draft started.
        """
        if not turns:
            return
        attempts = guardrails.max_attempts if guardrails else 1
        max_words = guardrails.max_words if guardrails else None
        batch, prompt_rows = self.prompt_cache.prefill([t.tokens for t in turns])
        decoder = Decoder(self.model, batch, prompt_rows, self.prompt_cache.cache_keyword)
        max_new_tokens = sampling.max_new_tokens
        sampler = self._sampler(guardrails, sampling)
        prompt_row = {id(t): r for t, r in zip(turns, prompt_rows)}
        launched = {id(t): 1 for t in turns}  # attempts started
        ended: dict[int, dict[int, tuple[list[int], list[dict]]]] = {
            id(t): {} for t in turns
        }  # attempt -> (tokens, draw events)

        def row(turn: Drafting, attempt: int) -> _Row:
            end_banned = bool(guardrails) and not guardrails.end_allowed(count_user_turns(turn.prompt))
            return _Row(turn, attempt, sampler.row(derive_seed(turn.seed, attempt), end_banned))

        stops = self.draft_stop_ids
        rows = [row(turn, 1) for turn in turns]
        while rows:
            tokens = sampler.draw(decoder.step(), [r.draw for r in rows])
            decoder.feed(tokens)
            for r, token in zip(rows, tokens):
                if r.attempt == 1 and not r.tokens:
                    r.turn.p_end = {"p_end": r.draw.p_end, "p_end_steered": r.draw.p_end_steered}
                r.tokens.append(token)
                # A draft over max_words is rejected anyway: it stops there.
                over = (
                    max_words is not None
                    and len(self.tokenizer.decode(r.tokens, skip_special_tokens=True).split()) > max_words
                )
                if token in stops or len(r.tokens) >= max_new_tokens or over:
                    r.ended = True
                    ended[id(r.turn)][r.attempt] = (r.tokens, r.draw.events)
                    self._judge_ended(r.turn, ended[id(r.turn)], guardrails, attempts, stop)
            going = [i for i, r in enumerate(rows) if not r.ended and r.turn.result is None]
            in_flight = Counter(id(rows[i].turn) for i in going)
            for slot in (i for i in range(len(rows)) if i not in going):
                open_turns = [t for t in turns if t.result is None and launched[id(t)] < attempts]
                if not open_turns:
                    break
                turn = min(open_turns, key=lambda t: in_flight[id(t)])
                launched[id(turn)] += 1
                in_flight[id(turn)] += 1
                decoder.restart(slot, prompt_row[id(turn)])
                rows[slot] = row(turn, launched[id(turn)])
                going.append(slot)
            if len(going) < len(rows):
                going.sort()
                decoder.keep(going)
                rows = [rows[i] for i in going]

    def _judge_ended(
        self, turn: Drafting, ended: dict[int, tuple[list[int], list[dict]]], guardrails, attempts: int, stop
    ) -> None:
        """Judge the turn's ended drafts in attempt order, as far as they go without a gap."""
        while turn.result is None and turn.next_attempt in ended:
            self._judge(turn, *ended.pop(turn.next_attempt), guardrails, attempts, stop)

    def _judge(
        self, turn: Drafting, tokens: list[int], draw_events: list[dict], guardrails, attempts: int, stop
    ) -> None:
        """Read an ended draft and check it: an accepted turn gets its `result`; a rejected
        one its next attempt or the fallback."""
        draft, finish = self._read(tokens, stop)
        attempt = turn.next_attempt
        turn.events.extend({**event, "attempt": attempt} for event in draw_events)
        reason = check_draft(draft, turn.prompt, guardrails) if guardrails else None
        if reason is None:
            turn.result = GeneratedTurn.of(draft, turn.events, attempt, finish, **turn.p_end)
            return
        turn.events.append({**reason, "attempt": attempt})
        turn.next_attempt = attempt + 1
        if turn.next_attempt > attempts:
            turn.result = self._fallback(draft, turn.events, guardrails, **turn.p_end)

    def _read(self, tokens: list[int], stop) -> tuple[ParsedDraft, str]:
        """A draft's tokens as the parsed draft and its finish reason."""
        end = next((k for k, token in enumerate(tokens) if token in self.draft_stop_ids), None)
        if end is not None and tokens[end] == self.end_token_id:
            end += 1  # the end marker stays in the text: the draft parser reads it
        text = self.tokenizer.decode(tokens[:end], skip_special_tokens=False)
        finish = "length" if end is None and not any(s and s in text for s in stop) else "stop"
        return parse_draft(cut_at_stops(text, tuple(stop)), self.template), finish

    @staticmethod
    def _fallback(draft: ParsedDraft, events: list[dict], guardrails: Guardrails, **p_end) -> GeneratedTurn:
        # "keep" uses the last draft's words; a lone early end marker is never kept.
        if guardrails.fallback == "keep" and draft.words:
            events.append({"guardrail": "fallback", "action": "keep", "attempt": guardrails.max_attempts})
            return GeneratedTurn(draft.words, False, events, attempts=guardrails.max_attempts, **p_end)
        events.append({"guardrail": "fallback", "action": "end", "attempt": guardrails.max_attempts})
        return GeneratedTurn(draft.text, False, events, exhausted=True, attempts=guardrails.max_attempts, **p_end)

    def _sampler(self, guardrails: Guardrails | None, sampling: TurnSampling) -> RowSampler:
        first_word_mask = None
        if guardrails and guardrails.banned_first_words:
            first_word_mask = self._first_word_mask(guardrails.banned_first_words)
        return RowSampler(
            sampling=sampling,
            device=self.model.device,
            first_word_mask=first_word_mask,
            whitespace_ids=self._whitespace_ids() if first_word_mask is not None else None,
            end_token_id=self.end_token_id,
            token_text=lambda token: self.token_texts[token],
        )

    @property
    def token_texts(self) -> list[str]:
        if self._token_texts is None:
            self._token_texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        return self._token_texts

    def _whitespace_ids(self) -> set[int]:
        if self._whitespace is None:
            self._whitespace = {i for i, text in enumerate(self.token_texts) if not text.strip()}
        return self._whitespace

    def _first_word_mask(self, banned: tuple[str, ...]) -> torch.Tensor:
        """Token ids whose text begins with a banned first word (" I", "You", "Here", ...)."""
        if banned not in self._first_word_masks:
            mask = torch.zeros(self.model.get_output_embeddings().out_features, dtype=torch.bool)
            for i, text in enumerate(self.token_texts):
                if text.strip() and first_word(text) in banned and text.strip()[0].isalpha():
                    mask[i] = True
            self._first_word_masks[banned] = mask.to(self.model.device)
        return self._first_word_masks[banned]

"""The kept prompt cache (`infer/prompt_cache.py`) on the real SmolLM2: drafts decoded from a
cached prompt, a redraw, and a next turn that reuses its conversation's previous prompt give
what a fresh prefill of the whole prompt gives (up to float rounding), and the store stays
within its budget."""

from __future__ import annotations

import pytest
import torch

from userlm.flipped.format import system_text
from userlm.flipped.templates import render
from userlm.infer.guardrails import Guardrails
from userlm.infer.prompt_cache import PromptCache
from userlm.infer.simulator import UserSimulator

GOALS = ["plan a vegetarian dinner party", "fix a leaking tap under the kitchen sink", "learn chess"]
REPLY = "Sure, I can help with that. Could you tell me a bit more about what you need?"


@pytest.fixture(scope="module")
def smollm2():
    return UserSimulator.load("default")


def conversation(goal: str, *turns: str) -> list[dict]:
    messages = [{"role": "system", "content": system_text(goal)}]
    for k, text in enumerate(turns):
        messages.append({"role": "user" if k % 2 == 0 else "assistant", "content": text})
    return messages


def tokens(sim, prompt) -> list[int]:
    return sim.tokenizer(render(sim.tokenizer, sim.template, prompt), add_special_tokens=False)["input_ids"]


def fresh_logits(sim, prompt) -> torch.Tensor:
    """The next-token logits of one whole-prompt forward, no cache involved."""
    ids = torch.tensor([tokens(sim, prompt)])
    with torch.no_grad():
        return sim.model(input_ids=ids).logits[0, -1]


def cached_logits(sim, cache: PromptCache, prompts, rows) -> torch.Tensor:
    batch, row_of = cache.prefill([tokens(sim, p) for p in prompts])
    ids, mask, kv = batch.inputs([row_of[r] for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]
    with torch.no_grad():
        out = sim.model(
            input_ids=ids[:, -1:],
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache.cache_keyword: kv},
        )
    return out.logits[:, -1]


def test_logits_from_a_kept_cache_match_a_fresh_prefill(smollm2):
    cache = PromptCache(smollm2.model, smollm2.tokenizer.pad_token_id)
    first = [conversation(goal) for goal in GOALS]
    # Rows of different lengths (left padding), one of them asked for twice (a redraw).
    logits = cached_logits(smollm2, cache, first, [0, 1, 2, 1])
    for row, prompt in zip(logits, [first[0], first[1], first[2], first[1]]):
        torch.testing.assert_close(row, fresh_logits(smollm2, prompt), atol=2e-4, rtol=1e-4)
    # Next turns extend the stored prompts: only the new tokens are prefilled, and a row that
    # shares nothing (a new conversation) sits in the same batch behind a gap of padding.
    second = [conversation(goal, "I need help with this", REPLY) for goal in GOALS[:2]] + [conversation("write a poem")]
    before = cache.stats["reused_tokens"]
    logits = cached_logits(smollm2, cache, second, [0, 1, 2])
    assert cache.stats["reused_tokens"] - before >= len(tokens(smollm2, first[0])) - 1
    for row, prompt in zip(logits, second):
        torch.testing.assert_close(row, fresh_logits(smollm2, prompt), atol=2e-4, rtol=1e-4)


def test_greedy_turns_from_the_cache_are_those_of_plain_generate(smollm2):
    """Temperature 0 through the simulator (kept cache, a next turn reusing the previous prompt)
    against transformers' own `generate` on each whole prompt alone."""
    smollm2.prompt_cache.clear()
    first = [conversation(goal) for goal in GOALS]
    second = [conversation(goal, "I need help with this", REPLY) for goal in GOALS]
    for prompts in (first, second):
        turns = smollm2.generate(prompts, temperature=0, max_new_tokens=16)
        for prompt, turn in zip(prompts, turns):
            ids = torch.tensor([tokens(smollm2, prompt)])
            out = smollm2.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=16,
                eos_token_id=smollm2.stop_token_ids,
                pad_token_id=smollm2.tokenizer.pad_token_id,
            )
            text = smollm2.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            assert turn.text.strip() == text.strip()
    assert smollm2.prompt_cache.stats["reused_tokens"] > 0


def test_sampled_drafts_and_redraws_do_not_depend_on_the_kept_cache(smollm2):
    """Guarded sampling (rejected drafts redrawn from the cached prompt) gives the same turns,
    events and attempts with the store warm, cold, or off."""
    prompts = [conversation(goal, "I need help with this", REPLY) for goal in GOALS]
    guardrails = Guardrails(min_words=10, max_words=14, max_attempts=3)
    seeds = [11, 12, 13]

    def run(sim):
        return [
            (t.text, t.events, t.attempts)
            for t in sim.generate(prompts, guardrails=guardrails, seed=seeds, max_new_tokens=24)
        ]

    smollm2.prompt_cache.clear()
    smollm2.generate(
        [conversation(goal) for goal in GOALS], seed=1, max_new_tokens=2
    )  # stores the first turns' prompts
    warm = run(smollm2)
    smollm2.prompt_cache.clear()
    cold = run(smollm2)
    budget, smollm2.prompt_cache.budget_bytes = smollm2.prompt_cache.budget_bytes, 0
    try:
        smollm2.prompt_cache.clear()
        off = run(smollm2)
        alone = [
            smollm2.generate([p], guardrails=guardrails, seed=[s], max_new_tokens=24)[0] for p, s in zip(prompts, seeds)
        ]
    finally:
        smollm2.prompt_cache.budget_bytes = budget
    assert warm == cold == off == [(t.text, t.events, t.attempts) for t in alone]
    assert any(attempts > 1 for _, _, attempts in warm)  # some row was redrawn


def test_the_store_keeps_the_longest_prompts_within_its_budget(smollm2):
    cache = PromptCache(smollm2.model, smollm2.tokenizer.pad_token_id)
    first, second = conversation(GOALS[0]), conversation(GOALS[0], "I need help with this", REPLY)
    batch, rows = cache.prefill([tokens(smollm2, first), tokens(smollm2, first)])
    assert rows == [0, 0] and batch.ids.shape[0] == 1  # equal prompts are prefilled once
    cache.prefill([tokens(smollm2, second)])
    # The first prompt is a prefix of the second: only the longer one is kept.
    assert list(cache._store) == [tuple(tokens(smollm2, second)[:-1])]
    per_token = cache._bytes / (len(tokens(smollm2, second)) - 1)
    prompts = [tokens(smollm2, conversation(goal)) for goal in GOALS]
    # Room for all the prompts' prefixes but one token: the least recently used goes.
    small = PromptCache(
        smollm2.model,
        smollm2.tokenizer.pad_token_id,
        budget_bytes=int(per_token * (sum(len(p) - 1 for p in prompts) - 1)),
    )
    small.prefill(prompts)
    assert 0 < small._bytes <= small.budget_bytes and len(small._store) < len(GOALS)
    # Reading through an evicted prompt still works: it is prefilled again.
    logits = cached_logits(smollm2, small, [conversation(GOALS[0])], [0])
    torch.testing.assert_close(logits[0], fresh_logits(smollm2, conversation(GOALS[0])), atol=2e-4, rtol=1e-4)

"""Perplexity scores exactly the tokens training scores, batched or not."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from userlm.evaluation.perplexity import completion_nll, perplexity, without_intent
from userlm.evaluation.scoring import teacher_forced
from userlm.flipped.templates import CHATML, tokenize_sample


@pytest.fixture
def tiny_model(tiny_llama):
    folder = tiny_llama("ppl", hidden_size=32, layers=1)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def labels_loss(model, tokenizer, sample):
    """The training loss: transformers' causal-LM loss with labels = input_ids masked by completion_mask."""
    encoded = tokenize_sample(tokenizer, CHATML, sample)
    ids = torch.tensor([encoded["input_ids"]])
    labels = torch.tensor([[t if m else -100 for t, m in zip(encoded["input_ids"], encoded["completion_mask"])]])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss), sum(encoded["completion_mask"])


def test_perplexity_masking_equals_the_training_loss_masking(tiny_model, eval_test_file):
    model, tokenizer = tiny_model
    rows = samples(eval_test_file)
    # Batched with padding (rows of different lengths share a batch) and one at a time.
    batched = completion_nll(model, tokenizer, CHATML, rows, batch_size=4, progress=False)
    for sample, (nll, tokens) in zip(rows, batched):
        loss, trained = labels_loss(model, tokenizer, sample)
        # The first trained token is predicted from the prompt's last token, so all of them are scored.
        assert tokens == trained
        assert nll / tokens == pytest.approx(loss, rel=1e-5)
    assert completion_nll(model, tokenizer, CHATML, rows[:1], batch_size=1, progress=False)[0][0] == pytest.approx(
        batched[0][0], rel=1e-5
    )


def test_perplexity_pools_tokens_and_without_intent_keeps_the_targets(tiny_model, eval_test_file):
    assert perplexity([(2.0, 1), (4.0, 3)]) == pytest.approx(math.exp(6.0 / 4))
    model, tokenizer = tiny_model
    sample = samples(eval_test_file)[1]
    stripped = without_intent(sample)
    assert stripped["prompt"][0] == {"role": "system", "content": ""}
    assert stripped["prompt"][1:] == sample["prompt"][1:]
    assert stripped["completion"] == sample["completion"]
    (with_nll, with_tokens), (without_nll, without_tokens) = completion_nll(
        model, tokenizer, CHATML, [sample, stripped], progress=False
    )
    assert with_tokens == without_tokens
    assert with_nll != without_nll


def test_bf16_autocast_reads_the_real_model_within_two_percent(default_model_dir, eval_test_file):
    """`userlm eval --bf16` reads these passes under bf16 autocast: the real SmolLM2's pooled perplexity
    stays within 2% of float32's (1.1% here), and the per-sample figures do move (the autocast is on)."""
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    rows = samples(eval_test_file)
    exact = completion_nll(model, tokenizer, CHATML, rows, progress=False)
    with teacher_forced(SimpleNamespace(model=model), SimpleNamespace(bf16=True)):
        fast = completion_nll(model, tokenizer, CHATML, rows, progress=False)
    assert [n for _, n in fast] == [n for _, n in exact]
    assert perplexity(fast) == pytest.approx(perplexity(exact), rel=0.02)
    assert [nll for nll, _ in fast] != [nll for nll, _ in exact]

"""The per-row sampler (infer/sampling.py) on hand-made logits: its nucleus is the one
transformers' warpers keep, draws never leave it, and a row's draws do not depend on the
rows beside it."""

import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from userlm.infer.sampling import TOP_K_PREFILTER, RowSampler
from userlm.infer.turn_sampling import TurnSampling


def sampler(temperature=1.0, top_p=0.8, **kwargs):
    sampling = TurnSampling(temperature=temperature, top_p=top_p)
    return RowSampler(sampling=sampling, device=torch.device("cpu"), **kwargs)


def warped_support(scores: torch.Tensor, temperature: float, top_p: float) -> list[set[int]]:
    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    return [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in warped]


def test_the_nucleus_is_what_transformers_top_p_keeps():
    torch.manual_seed(0)
    vocab = 4 * TOP_K_PREFILTER
    peaked = torch.randn(vocab) * 4  # its top-p prefix lies within the top k
    flat = torch.randn(vocab) * 0.01  # it does not: sorted in full
    scores = torch.stack([peaked, flat])
    for temperature, top_p in [(1.0, 0.8), (0.7, 0.9), (1.3, 0.5)]:
        nucleus = sampler(temperature, top_p)._nuclei(scores)
        expected = warped_support(scores, temperature, top_p)
        for i in range(2):
            probs, ids = nucleus(i)
            assert set(ids.tolist()) == expected[i]
            assert torch.all(probs[:-1] >= probs[1:])  # descending
    assert len(sampler()._nuclei(scores)(1)[1]) > TOP_K_PREFILTER


def test_greedy_keeps_only_the_argmax():
    scores = torch.tensor([[0.1, 3.0, 2.9, -1.0]])
    probs, ids = sampler(temperature=0)._nuclei(scores)(0)
    assert ids.tolist() == [1] and probs.tolist() == [1.0]


def test_draws_stay_in_the_nucleus_and_follow_its_probabilities():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))  # top-p 0.8 keeps tokens 0 and 1
    s = sampler(top_p=0.8)
    row = s.row(seed=1, end_banned=False)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[s.draw(scores, [row])[0]] += 1
    assert counts[2] == counts[3] == 0
    assert abs(counts[0] / counts[:2].sum() - 0.5 / 0.8) < 0.03


def test_a_rows_draws_do_not_depend_on_the_rows_beside_it():
    torch.manual_seed(1)
    mine = torch.randn(1, 1000) * 3
    others = torch.randn(5, 1000) * 0.01  # flat rows: their nuclei are sorted in full

    def draws(batch: torch.Tensor) -> list[int]:
        s = sampler()
        row = s.row(seed=7, end_banned=False)
        companions = [s.row(seed=100 + i, end_banned=False) for i in range(len(batch) - 1)]
        return [s.draw(batch, [row, *companions])[0] for _ in range(50)]

    assert draws(mine) == draws(torch.cat([mine, others]))


def test_a_banned_draw_is_redrawn_outside_the_ban_and_recorded():
    scores = torch.log(torch.tensor([[0.9, 0.05, 0.05]]))
    s = sampler(top_p=0.8, end_token_id=0)
    row = s.row(seed=0, end_banned=True)
    token = s.draw(scores, [row])[0]
    assert token in (1, 2)
    assert row.events == [{"guardrail": "end_too_early", "action": "redrawn"}]

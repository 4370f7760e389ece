"""Termination without luck: ROC AUC and ROC curve on known orderings (exact values), and
P(end as the first token) on real tiny models: a bigram model whose P("\\n") and P(end | "\\n")
are set by hand, random Llamas scored with shared rows against one pass per point, and models
that always, never, or only after a phrase end."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from tests.eval_models import make_bigram_model, make_trigger_model
from tests.test_eval_termination import HELD_OUT, PHRASE, PHRASE_SEEN, REAL_END
from userlm.evaluation.end_probability import end_probabilities, end_probability_metrics, end_rows, end_tokens
from userlm.evaluation.roc import roc_auc, roc_curve
from userlm.evaluation.termination import decision_points
from userlm.flipped.format import END_MARKER, flip
from userlm.flipped.templates import CHATML, USERLM_LLAMA3, attach_template, render
from userlm.infer.simulator import UserSimulator


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_roc_auc_against_known_orderings():
    # Positives 0.9 and 0.7 against negatives 0.8, 0.6, 0.5: 0.9 beats 3, 0.7 beats 2 -> 5/6.
    assert roc_auc([0.9, 0.8, 0.7, 0.6, 0.5], [True, False, True, False, False]) == 5 / 6
    assert roc_auc([0.1, 0.2, 0.3, 0.4], [False, False, True, True]) == 1.0
    assert roc_auc([0.4, 0.3, 0.2, 0.1], [False, False, True, True]) == 0.0
    # Ties count one half: a constant score is chance, and 0.5 vs 0.5 is half a win.
    assert roc_auc([0.3, 0.3, 0.3], [True, False, False]) == 0.5
    assert roc_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [True, True])


def test_roc_curve_has_one_point_per_distinct_threshold():
    assert roc_curve([0.9, 0.8, 0.7, 0.6, 0.5], [True, False, True, False, False]) == [
        (0.0, 0.0),
        (0.0, 0.5),
        (1 / 3, 0.5),
        (1 / 3, 1.0),
        (2 / 3, 1.0),
        (1.0, 1.0),
    ]
    # Tied scores move together.
    assert roc_curve([0.5, 0.5, 0.2], [True, False, False]) == [(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)]


def test_end_probability_metrics_summarise_both_kinds_of_point():
    result = end_probability_metrics([0.9, 0.1, 0.3, 0.2], [True, False, True, False])
    assert result["value"] == 1.0 and result["n"] == 4 and result["real_end_points"] == 2
    assert result["mean_at_ends"] == pytest.approx(0.6) and result["mean_at_continues"] == pytest.approx(0.15)
    assert result["roc"][0] == (0.0, 0.0) and result["roc"][-1] == (1.0, 1.0)
    # Every resample that holds both kinds ranks them perfectly, and so does Hanley-McNeil's standard error.
    assert result["ci"] == result["ci_hanley_mcneil"] == [1.0, 1.0]
    # Resampled by conversation when each point's is given: two conversations of two points.
    clustered = end_probability_metrics(
        [0.9, 0.1, 0.3, 0.2], [True, False, True, False], conversations=["a", "a", "b", "b"]
    )
    assert (clustered["unit"], clustered["units"], clustered["n"]) == ("conversation", 2, 4)
    # No real end among the points: nothing to rank against.
    assert end_probability_metrics([0.2, 0.3], [False, False])["value"] is None


# Logits after the user header and after "\n", on top of 0 for every other token.
NEWLINE_LOGITS = {"\n": 12.0, "ok": 11.0}
END_LOGITS = {END_MARKER: 11.0, "ok": 10.0}


def softmax_share(logits: dict, target: str, vocabulary: int) -> float:
    return math.exp(logits[target]) / (sum(map(math.exp, logits.values())) + vocabulary - len(logits))


@pytest.fixture(scope="module")
def bigram(tmp_path_factory, llama3_style_tokenizer):
    folder = tmp_path_factory.mktemp("bigram")
    make_bigram_model(
        folder,
        llama3_style_tokenizer,
        USERLM_LLAMA3,
        transitions={"<|end_header_id|>": NEWLINE_LOGITS, "\n": END_LOGITS},
    )
    return UserSimulator.load(folder)


def test_with_the_llama3_opening_p_end_is_p_newline_times_p_end_after_it(bigram, eval_test_file):
    points = decision_points(read(eval_test_file))
    vocabulary = len(bigram.tokenizer)
    # "\n" and the end marker are one token each: the end turn is read as two.
    assert bigram.tokenizer.convert_ids_to_tokens(end_tokens(bigram.tokenizer, USERLM_LLAMA3)) == ["Ċ", END_MARKER]
    expected = softmax_share(NEWLINE_LOGITS, "\n", vocabulary) * softmax_share(END_LOGITS, END_MARKER, vocabulary)
    # rel 1e-3: torch's float32 log-softmax over 49,156 logits is good to about 1e-4.
    assert end_probabilities(bigram, points, batch_size=3, progress=False) == pytest.approx(
        [expected] * len(points), rel=1e-3
    )
    # Through chatml the prompt already ends with "user\n": P(end) is the marker's share after "\n".
    chatml = UserSimulator(bigram.model, bigram.tokenizer, CHATML)
    assert end_probabilities(chatml, points, progress=False) == pytest.approx(
        [softmax_share(END_LOGITS, END_MARKER, vocabulary)] * len(points), rel=1e-3
    )


def one_pass_per_point(simulator, points):
    """The definition: each point's prompt with the end turn appended, in a forward pass of its own."""
    ends = end_tokens(simulator.tokenizer, simulator.template)
    result = []
    for point in points:
        ids = simulator.tokenizer(
            render(simulator.tokenizer, simulator.template, point["prompt"]), add_special_tokens=False
        )["input_ids"]
        with torch.no_grad():
            logits = simulator.model(input_ids=torch.tensor([ids + ends[:-1]])).logits[0]
        log_p = torch.log_softmax(logits[len(ids) - 1 :], dim=-1)
        result.append(math.exp(sum(float(log_p[j, token]) for j, token in enumerate(ends))))
    return result


@pytest.mark.parametrize("template", [USERLM_LLAMA3, CHATML], ids=lambda t: t.name)
def test_shared_rows_give_what_one_pass_per_point_gives(
    tiny_llama_for, llama3_style_tokenizer, eval_test_file, template
):
    tokenizer = copy.deepcopy(llama3_style_tokenizer)
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    attach_template(tokenizer, template)
    folder = tiny_llama_for(tokenizer, name=f"tiny-{template.name}", hidden_size=32, layers=2)
    simulator = UserSimulator.load(folder)
    points = decision_points(read(eval_test_file))
    rows, _, owners = end_rows(simulator.tokenizer, template, points)
    # 7 points in 4 conversations: every earlier point is read from its conversation's last pass.
    assert len(rows) == 4 and sorted(i for owner in owners for i in set(owner)) == list(range(7))
    shared = end_probabilities(simulator, points, batch_size=2, progress=False)
    assert shared == pytest.approx(one_pass_per_point(simulator, points), rel=1e-4)
    assert len(set(round(p, 12) for p in shared)) == 7  # random weights: every point differs


def test_models_that_always_never_or_only_after_a_phrase_end(
    forced_simulator, eval_test_file, tmp_path, default_tokenizer
):
    points = decision_points(read(eval_test_file))
    always = end_probabilities(UserSimulator.load(forced_simulator(always_end=True)), points, progress=False)
    never = end_probabilities(UserSimulator.load(forced_simulator(always_end=False)), points, progress=False)
    assert min(always) > 0.999 and max(never) < 1e-6
    # A constant answer ranks nothing: chance.
    assert end_probability_metrics([round(p, 3) for p in always], [p["is_end"] for p in points])["value"] == 0.5

    phrase = UserSimulator.load(
        make_trigger_model(
            tmp_path / "phrase", default_tokenizer, trigger=PHRASE, when_present=END_MARKER, otherwise="ok"
        )
    )
    held_out = decision_points([s for record in HELD_OUT for s in flip(record, "test")])
    probabilities = end_probabilities(phrase, held_out, batch_size=4, progress=False)
    assert [p > 0.99 for p in probabilities] == PHRASE_SEEN and all(p > 0.99 or p < 0.01 for p in probabilities)
    # Ends 5, continues 6. The 3 ends after the phrase beat the 3 continues without it (9 wins);
    # the same-score pairs, ends and continues both after the phrase (9) or both without it (6), count
    # one half: (9 + 7.5) / 30.
    assert roc_auc([round(p, 2) for p in probabilities], REAL_END) == pytest.approx(16.5 / 30)


def test_nucleus_probability_is_the_chance_top_p_sampling_draws_the_token():
    import torch

    from userlm.evaluation.forward import nucleus_probability

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 4)
    tokens = torch.tensor([0, 1, 2, 3])
    # top-p 0.7 keeps 0.5 and 0.3 (the likelier tokens hold 0 and 0.5 < 0.7), renormalised by 0.8.
    assert nucleus_probability(probs, tokens, 0.7).tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    # top-p 0.9 keeps the first three (mass 0.95).
    assert nucleus_probability(probs, tokens, 0.9).tolist() == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0])
    assert nucleus_probability(probs, tokens, 1.0).tolist() == pytest.approx([0.5, 0.3, 0.15, 0.05])


def test_expected_f1_from_expected_counts():
    from userlm.evaluation.end_probability import expected_f1

    # tp 0.5, fp 0.2 + 0.4 = 0.6, fn 0.5 + 1.0 = 1.5: F1 = 1.0 / 3.1.
    result = expected_f1([0.5, 0.2, 0.0, 0.4], [True, False, True, False])
    assert result["value"] == pytest.approx(100 / 3.1)
    assert result["precision"] == pytest.approx(0.5 / 1.1) and result["recall"] == pytest.approx(0.25)
    assert result["expected_ends"] == pytest.approx(1.1) and result["real_end_points"] == 2 and result["n"] == 4
    assert expected_f1([0.0, 0.3], [True, False])["value"] == 0.0


def test_end_scores_give_the_sampled_chance_of_ending_beside_p_end(forced_simulator, eval_test_file):
    from userlm.evaluation.end_probability import end_scores

    points = decision_points(read(eval_test_file))
    always = UserSimulator.load(forced_simulator(always_end=True))
    raw, sampled = end_scores(always, points, top_p=0.8, progress=False)
    # The end marker holds nearly all the mass: it alone is the nucleus, drawn every time.
    assert sampled == pytest.approx([1.0] * len(points)) and min(raw) > 0.5
    never = UserSimulator.load(forced_simulator(always_end=False))
    assert end_scores(never, points, top_p=0.8, progress=False)[1] == [0.0] * len(points)
    assert end_scores(never, points, progress=False)[1] is None

"""`userlm calibrate`: the fit recovers a known end bias (and threshold) from per-turn leave rates,
end to end on a hand-built model whose P(end) is set exactly, and runs on the real SmolLM2 default."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tests.eval_models import make_bigram_model
from userlm.cli import main as userlm
from userlm.errors import UserError
from userlm.evaluation.calibration import (
    CalibrateConfig,
    biased,
    calibrate,
    calibration_report,
    fit_bias,
    fit_threshold,
    rates,
)
from userlm.flipped.format import END_MARKER, flip
from userlm.flipped.templates import CHATML


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_fit_recovers_a_known_bias_from_per_turn_rates():
    # Real rates k/20 per turn; each turn's P(end) set so that sigmoid(logit(P) + B0) is that rate exactly.
    bias, real_rates = -1.25, [0.45, 0.3, 0.2, 0.15, 0.1]
    turns, probabilities, ends = [], [], []
    for t, rate in enumerate(real_rates, 1):
        ends += [True] * round(20 * rate) + [False] * round(20 * (1 - rate))
        turns += [t] * 20
        probabilities += [sigmoid(logit(rate) - bias)] * 20
    assert fit_bias(turns, probabilities, ends) == pytest.approx(bias, abs=1e-3)
    assert list(rates(turns, biased(probabilities, bias)).values()) == pytest.approx(real_rates)


def test_the_threshold_fit_reproduces_rates_a_threshold_made():
    # The real users left exactly where P(end) >= 0.3: the fitted threshold cuts between 0.25 and 0.3.
    probabilities = [0.9, 0.3, 0.1, 0.05, 0.5, 0.25, 0.02, 0.4, 0.2, 0.01]
    turns = [1, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    ends = [p >= 0.3 for p in probabilities]
    threshold = fit_threshold(turns, probabilities, ends)
    assert 0.25 < threshold < 0.3
    records = [
        {"conversation_id": str(k), "turn": t, "is_end": e, "p_end": p, "half": "fit"}
        for k, (t, e, p) in enumerate(zip(turns, ends, probabilities))
    ]
    report = calibration_report(records, "threshold")
    assert report["end_bias"] == 0.0 and report["end_threshold"] == threshold
    assert report["calibration_error"]["fit"]["after"] == 0.0 and report["calibration_error"]["fit"]["before"] > 0


def record(conversation_id: str, users: list[str], ends: bool) -> dict:
    messages = []
    for k, user in enumerate(users):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": f"Answer {k + 1}."}]
    return {
        "conversation_id": conversation_id,
        "messages": messages,
        "intent": "You are a user chatting with an assistant language model to learn a fact. You follow up once.",
        "persona": None,
        "meta": {"ends": ends},
    }


def write_validation(folder, records) -> None:
    folder.mkdir()
    with open(folder / "validation.jsonl", "w") as sink:
        for r in records:
            for sample in flip(r, "validation"):
                sink.write(json.dumps(sample) + "\n")


# The real users' leave rate is 20% at every turn: 125 conversations, 25 leave after turn 1, 20 of the
# other 100 after turn 2, 16 of the other 80 after turn 3; 64 are cut after a fourth turn (no end point).
HAZARD, LEAVERS = 0.2, [25, 20, 16]


def hazard_records() -> list[dict]:
    records, start = [], 0
    for turns, leavers in enumerate(LEAVERS, 1):
        records += [record(f"c{start + k}", [f"question {j}" for j in range(turns)], True) for k in range(leavers)]
        start += leavers
    return records + [record(f"c{start + k}", [f"question {j}" for j in range(4)], False) for k in range(64)]


def test_the_command_recovers_the_bias_of_a_model_whose_p_end_is_known(tmp_path, default_tokenizer):
    # A bigram Llama: after the chatml prompt's last token ("\n" of the open user header) the end marker
    # has logit `a` and every other token 0, so P(end) = e^a / (e^a + V - 1) at every point, exactly.
    known_bias = 1.5
    p_end = sigmoid(logit(HAZARD) - known_bias)
    vocabulary = len(default_tokenizer) + 1  # the end marker is added
    a = math.log(p_end / (1 - p_end) * (vocabulary - 1))
    model = make_bigram_model(tmp_path / "bigram", default_tokenizer, CHATML, transitions={"\n": {END_MARKER: a}})
    write_validation(tmp_path / "prep", hazard_records())

    report = calibrate(
        CalibrateConfig(simulator=str(model), data=tmp_path / "prep", out=tmp_path / "cal", conversations=None)
    )
    assert report["steerable"]  # the marker is one token: the other commands can bias its logit
    rows = {(r["half"], r["turn"]): r for r in report["table"]}
    assert {t for _, t in rows} == {1, 2, 3}
    assert all(r["simulated_before"] == pytest.approx(p_end, rel=1e-3) for r in rows.values())
    # Every point has the same P, so the least mean absolute difference brings it to the median of the
    # fit half's three per-turn rates...
    fit_rows = [r for r in report["table"] if r["half"] == "fit"]
    median = sorted(r["real_rate"] for r in fit_rows)[1]
    assert all(r["simulated_after"] == pytest.approx(median, abs=1e-3) for r in fit_rows)
    # ...which is near the known 20%, a half of the conversations drawn; so the known bias is recovered.
    assert report["end_bias"] == pytest.approx(known_bias, abs=0.3)
    for half in ("fit", "held_out"):
        errors = report["calibration_error"][half]
        assert errors["after"] < errors["before"] / 2

    written = yaml.safe_load((tmp_path / "cal" / "end_calibration.yaml").read_text())
    assert list(written) == ["end_bias", "end_threshold", "report"]
    assert written["end_bias"] == report["end_bias"] and written["end_threshold"] is None
    assert written["report"]["split"] == "validation" and written["report"]["counts"]["conversations"] == 125
    points = [json.loads(line) for line in (tmp_path / "cal" / "points.jsonl").read_text().splitlines()]
    assert len(points) == 25 + 2 * 20 + 3 * 16 + 3 * 64
    assert {p["half"] for p in points} == {"fit", "held_out"}


def test_calibrate_runs_on_the_real_default_from_the_command_line(tmp_path, capsys):
    conversations = [
        record("a", ["how do i boil an egg"], True),
        record("b", ["fix this python error: NameError", "it still fails", "thanks"], True),
        record("c", ["plan a day in rome", "and the evening?"], False),
        record("d", ["what is compound interest", "an example please"], True),
        record("e", ["write a haiku about rain"], True),
        record("f", ["best first programming language?", "why?", "ok and then?"], False),
    ]
    write_validation(tmp_path / "prep", conversations)
    out = tmp_path / "cal"
    assert userlm(["calibrate", "simulator=default@chatml", f"data={tmp_path / 'prep'}", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "fit error" in printed and "refuse end steering" in " ".join(printed.split())
    written = yaml.safe_load((out / "end_calibration.yaml").read_text())
    assert math.isfinite(written["end_bias"]) and written["end_threshold"] is None
    report = json.loads((out / "calibration.json").read_text())
    assert report["template"] == "chatml" and report["simulator"] == "default@chatml" and not report["steerable"]
    # The prompted base spells the marker it lacks in several tokens: it almost never leaves until biased.
    errors = report["calibration_error"]["fit"]
    assert errors["after"] < errors["before"]


def test_a_folder_without_a_validation_split_is_one_sentence(tmp_path):
    (tmp_path / "prep").mkdir()
    with pytest.raises(UserError, match="holds no validation samples"):
        CalibrateConfig(simulator="default@chatml", data=tmp_path / "prep")

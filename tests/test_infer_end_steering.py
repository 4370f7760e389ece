"""P(end) and end steering (`infer/turn_sampling.py`) on the real SmolLM2 default with the end marker
added as training adds it (a special token, the embeddings grown), its row a copy of the row of "Can",
one of the two words prompted SmolLM2 opens a user turn with, so that it leaves about 3 times in 10:
the local backend's P(end) against a plain forward pass, the bias and the threshold on the leave rate,
the calibration file, P(end) in `userlm simulate` records, and `userlm serve` returning it to the
OpenAI SDK."""

from __future__ import annotations

import json
import math

import openai
import pytest
import torch

from userlm.errors import UserError
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import render
from userlm.infer.chat import chat
from userlm.infer.config import ChatConfig, SimulateConfig
from userlm.infer.guardrails import Guardrails
from userlm.infer.simulate import load_simulator, run_simulation
from userlm.infer.simulator import UserSimulator
from userlm.infer.turn_sampling import TurnSampling, read_end_calibration

INTENTS = [
    "You are a user chatting with an assistant language model to plan a trip to Lisbon.",
    "You are a user chatting with an assistant language model to fix a bug in a Python script.",
    "You are a user chatting with an assistant language model to cook dinner.",
]
# The token whose row the end marker copies (P(end) about 0.3 on the intents below).
LIKE = "Can"


def steered(p_end: float, bias: float) -> float:
    """sigmoid(logit(p_end) + bias), computed here apart from the code under test."""
    return 1 / (1 + math.exp(-(math.log(p_end / (1 - p_end)) + bias)))


@pytest.fixture(scope="module")
def leaver(tmp_path_factory):
    """The folder of SmolLM2 with `<|endconversation|>` added (saved, so that servers can load it too)."""
    from userlm.infer.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("default")
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        rows = model.get_input_embeddings().weight
        rows[len(tokenizer) - 1] = rows[tokenizer(LIKE, add_special_tokens=False)["input_ids"][0]]
    folder = tmp_path_factory.mktemp("leaver") / "smollm2-leaver"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def simulator(leaver):
    return UserSimulator.load(leaver, template="chatml")


def prompts() -> list[list[dict]]:
    return [[{"role": "system", "content": intent}] for intent in INTENTS]


def test_p_end_is_the_softmax_of_the_first_logits(simulator):
    turns = simulator.generate(prompts(), seed=0, max_new_tokens=1, end_bias=2.0)
    end = simulator.end_token_id
    for prompt, turn in zip(prompts(), turns):
        ids = simulator.tokenizer(render(simulator.tokenizer, simulator.template, prompt), return_tensors="pt")
        with torch.no_grad():
            logits = simulator.model(ids["input_ids"]).logits[0, -1].float()
        expected = torch.softmax(logits, -1)[end].item()
        # The same weights and prompt; only the kernels' shapes differ (a cached decode step against one pass).
        assert turn.p_end == pytest.approx(expected, rel=1e-4)
        biased = logits.clone()
        biased[end] += 2.0
        assert turn.p_end_steered == pytest.approx(torch.softmax(biased, -1)[end].item(), rel=1e-4)
        assert turn.p_end_steered == pytest.approx(steered(turn.p_end, 2.0), rel=1e-9)
    # Before any guardrail's mask: an end banned for this turn leaves P(end) as it was.
    banned = simulator.generate(prompts(), seed=0, max_new_tokens=1, guardrails=Guardrails(min_turns_before_end=5))
    assert [t.p_end for t in banned] == pytest.approx([t.p_end for t in turns], rel=1e-6)
    assert all(t.p_end_steered == t.p_end for t in banned)


def leave_rate(simulator, **steering) -> float:
    rows = [p for p in prompts() for _ in range(12)]
    turns = simulator.generate(rows, seed=list(range(len(rows))), max_new_tokens=2, **steering)
    return sum(t.is_end for t in turns) / len(turns)


def test_the_bias_moves_the_leave_rate_and_the_threshold_decides(simulator):
    lower, drawn, higher = (leave_rate(simulator, end_bias=bias) for bias in (-3.0, 0.0, 3.0))
    assert lower < drawn < higher, (lower, drawn, higher)
    assert leave_rate(simulator, end_threshold=0.0) == 1.0
    assert leave_rate(simulator, end_threshold=1.0) == 0.0
    # A threshold between the prompts' P(end) splits them: each leaves iff its own P(end) reaches it.
    p_ends = [t.p_end for t in simulator.generate(prompts(), seed=0, max_new_tokens=1)]
    cut = sorted(p_ends)[1]
    turns = simulator.generate(prompts(), seed=0, max_new_tokens=4, end_threshold=cut)
    assert [t.is_end for t in turns] == [p >= cut for p in p_ends]
    # min_turns_before_end still holds: threshold 0 cannot make a user leave before it is allowed.
    held = simulator.generate(prompts(), seed=0, max_new_tokens=4, end_threshold=0.0, guardrails=Guardrails())
    assert not any(t.is_end for t in held)


def test_the_calibration_file_fills_what_the_config_leaves_unset(tmp_path, leaver):
    calibration = tmp_path / "calibration.yaml"
    calibration.write_text("end_bias: 1.25\nend_threshold: null\nturns: [1, 2, 3]\nerror_before: 0.2\n")
    assert read_end_calibration(calibration) == {"end_bias": 1.25, "end_threshold": None}
    options = dict(simulator=str(leaver), assistant="python:x:y", intents=["a"], out=tmp_path / "o.jsonl")
    assert SimulateConfig(**options, end_calibration=calibration).sampling() == TurnSampling(end_bias=1.25)
    explicit = SimulateConfig(**options, end_calibration=calibration, end_bias=-1.0, end_threshold=0.4)
    assert explicit.sampling() == TurnSampling(end_bias=-1.0, end_threshold=0.4)
    for text in ("end_bias: high\n", "report: 1\n", "end_threshold: 2\n"):
        calibration.write_text(text)
        with pytest.raises(UserError, match="end_bias|end_threshold"):
            read_end_calibration(calibration)


def test_steering_a_simulator_without_an_end_marker_is_refused(tiny_llama):
    config = ChatConfig(simulator=str(tiny_llama()), template="chatml", intent=INTENTS[0], end_bias=1.0)
    with pytest.raises(UserError, match="has no end marker <\\|endconversation\\|>, so end_bias and end_threshold"):
        load_simulator(config)


def test_chat_shows_p_end_beside_each_user_turn(tmp_path, simulator):
    shown: list[str] = []
    replies = iter(["Sure, what with?", "Anything else?"])
    record = chat(
        simulator,
        INTENTS[0],
        tmp_path / "chat.jsonl",
        guardrails=None,
        sampling=TurnSampling(max_new_tokens=4, end_bias=-2.0),
        max_turns=2,
        read=lambda _: next(replies),
        show=shown.append,
    )
    users = [t for t in record["turns"] if t["role"] == "user"]
    lines = [line for line in shown if line.startswith("user: ")]
    assert len(lines) == len(users)
    for line, turn in zip(lines, users):
        assert line.endswith(f"  [P(end) {turn['p_end']:.3f}, steered {turn['p_end_steered']:.3f}]")


def polite(messages: list[dict]) -> str:
    """The assistant under test of the simulate run below: the same short answer to everything."""
    return "Here is a complete answer to that."


def test_simulate_records_p_end_per_user_turn_and_names_the_steering(tmp_path, leaver):
    out = tmp_path / "sim.jsonl"
    config = SimulateConfig(
        simulator=str(leaver),
        template="chatml",
        assistant=f"python:{__name__}:polite",
        intents=INTENTS[:2],
        max_turns=2,
        max_new_tokens=4,
        end_bias=1.5,
        guardrails=None,
        out=out,
        progress=False,
    )
    run_simulation(config)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    users = [t for r in records for t in r["turns"] if t["role"] == "user"]
    assert users and all(0 < t["p_end"] < 1 for t in users)
    assert all(t["p_end_steered"] == pytest.approx(steered(t["p_end"], 1.5)) for t in users)
    assert all(r["simulator"]["end_bias"] == 1.5 and r["simulator"]["end_threshold"] is None for r in records)
    # Another bias is another configuration: other conversation ids, nothing reused.
    run_simulation(SimulateConfig(**{**config.__dict__, "end_bias": -1.5}))
    ids = [json.loads(line)["conversation_id"] for line in out.read_text().splitlines()]
    assert len(set(ids)) == len(ids) == 4


def test_serve_returns_p_end_to_the_openai_sdk(leaver, simulator, userlm_server):
    url = userlm_server(leaver, "--template", "chatml", "--model-name", "leaver")
    client = openai.OpenAI(base_url=url, api_key="none")
    [expected] = simulator.generate(prompts()[:1], seed=0, max_new_tokens=1)
    answer = client.chat.completions.create(
        model="leaver",
        messages=[{"role": "system", "content": INTENTS[0]}],
        max_tokens=4,
        seed=3,
        extra_body={"end_bias": 2.0, "guardrails": False},
    )
    userlm = answer.choices[0].model_extra["userlm"]
    assert userlm["p_end"] == pytest.approx(expected.p_end, rel=1e-4)
    assert userlm["p_end_steered"] == pytest.approx(steered(expected.p_end, 2.0))
    # The threshold per request: 0 leaves at once, and the reply is the end text.
    leaving = client.chat.completions.create(
        model="leaver",
        messages=[{"role": "system", "content": INTENTS[0]}],
        extra_body={"end_threshold": 0.0, "guardrails": False},
    )
    assert leaving.choices[0].model_extra["userlm"]["ended"] and leaving.choices[0].message.content == END_MARKER

"""The endpoint judge against a real OpenAI-compatible server (`transformers serve` of SmolLM2 on loopback)."""

from __future__ import annotations

from userlm.endpoint import Endpoint
from userlm.evaluation.judge import EndpointJudge
from userlm.evaluation.probes import build_probes

INTENT = "You are a user chatting with an assistant language model to fix a broken Python script."


def test_endpoint_judge_asks_the_server_for_every_probe(transformers_server, default_model_dir):
    sample = {"prompt": [{"role": "system", "content": INTENT}], "completion": [{"role": "user", "content": "my python script crashes"}]}
    probes = build_probes([sample], "role", 1, seed=0) + build_probes([sample], "intent", 1, seed=0)
    judge = EndpointJudge(Endpoint(base_url=transformers_server, model=str(default_model_dir), max_concurrency=2))
    verdicts = judge.judge(probes, ["no idea, thats why im asking", "sure, tell me about that instead"])
    assert judge.failures == []
    assert len(verdicts) == 2 and all(v in (True, False, None) for v in verdicts)
    assert "endpoint judge" in judge.label and str(default_model_dir) in judge.label

"""The endpoint judge against a real OpenAI-compatible server (`transformers serve` on loopback)
of a tiny model with hand-set weights whose answer is known: "No" when the reply under judgment
says "Certainly", "Yes" otherwise. The verdicts must be those answers, probe by probe."""

from __future__ import annotations

import socket

from tests.eval_models import make_trigger_model
from userlm.endpoint import Endpoint
from userlm.evaluation.judge import EndpointJudge, adherence
from userlm.evaluation.probes import build_probes

INTENT = "You are a user chatting with an assistant language model to fix a broken Python script."
OPENING = {
    "prompt": [{"role": "system", "content": INTENT}],
    "completion": [{"role": "user", "content": "my python script crashes"}],
}
STAYS = "no idea, thats why im asking"
ANSWERS = "Certainly! Here is the corrected script."


def test_endpoint_judge_returns_what_the_served_model_answered_for_each_probe(
    tmp_path, default_tokenizer, serve_folder
):
    folder = make_trigger_model(
        tmp_path / "judge", default_tokenizer, trigger=" Certainly", when_present="No", otherwise="Yes", flipped=False
    )
    url = serve_folder(folder)
    probes = build_probes([OPENING], "role", 1, seed=0) * 3 + build_probes([OPENING], "intent", 1, seed=0) * 3
    replies = [STAYS, ANSWERS, STAYS, ANSWERS, ANSWERS, STAYS]
    # More requests than may be in flight at once: answers come back out of order, verdicts must not.
    judge = EndpointJudge(Endpoint(base_url=url, model=str(folder), max_concurrency=2))
    verdicts = judge.judge(probes, replies)
    assert judge.failures == []
    assert verdicts == [True, False, True, False, False, True]
    assert judge.label == f"endpoint judge: model {str(folder)!r} at {url.split('/')[2]}"
    rate = adherence(judge, probes[:3], replies[:3])
    assert (rate["value"], rate["n"], rate["unjudged"]) == (200 / 3, 3, 0)
    assert [e["adhered"] for e in rate["examples"]] == [True, False, True]


def test_a_failed_endpoint_leaves_probes_unjudged_and_says_why(tmp_path):
    with socket.socket() as probe_socket:  # a port nothing listens on once it is closed
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    judge = EndpointJudge(Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, timeout=5))
    probes = build_probes([OPENING], "role", 1, seed=0)
    rate = adherence(judge, probes * 2, [STAYS, ANSWERS])
    assert (rate["value"], rate["n"], rate["unjudged"]) == (None, 0, 2)
    assert len(judge.failures) == 2 and all("Could not connect to the endpoint" in f for f in judge.failures)

"""P(end) and end steering through the completions backend, against real servers on loopback serving
the SmolLM2 with an end marker of `test_infer_end_steering.py`: `transformers serve` (which returns no
log-probabilities: no P(end), a threshold refused with one sentence, the bias applied as a sequence
bias) and vLLM, whose P(end) matches the local backend's."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_infer_end_steering import INTENTS, leaver, prompts, simulator  # noqa: F401 (module fixtures)
from userlm.endpoint import Endpoint
from userlm.errors import UserError
from userlm.infer.completions import CompletionsSimulator
from userlm.infer.config import ChatConfig
from userlm.infer.simulate import load_simulator
from userlm.infer.turn_sampling import TurnSampling

# vLLM computes in float32 with its own kernels: the same model's P(end) agrees to about 1e-5; this allows 1e-3.
VLLM_TOLERANCE = 1e-3


def turns(backend: CompletionsSimulator, sampling: TurnSampling) -> list:
    async def run():
        try:
            return await backend.agenerate(prompts(), seed=list(range(len(INTENTS))), sampling=sampling)
        finally:
            await backend.aclose()

    return asyncio.run(run())


def test_transformers_serve_gives_no_p_end_refuses_a_threshold_and_takes_the_bias(leaver, serve_folder):  # noqa: F811
    url = serve_folder(leaver)
    backend = CompletionsSimulator(Endpoint(base_url=url, model=str(leaver)), leaver, template="chatml")
    drawn = turns(backend, TurnSampling(max_new_tokens=2))
    assert all(t.p_end is None for t in drawn)
    # The bias reaches the server as a sequence bias: +30 makes every user leave at once, -30 none.
    assert all(t.is_end for t in turns(backend, TurnSampling(max_new_tokens=2, end_bias=30.0)))
    assert not any(t.is_end for t in turns(backend, TurnSampling(max_new_tokens=2, end_bias=-30.0)))
    config = ChatConfig(
        simulator=str(leaver), template="chatml", simulator_endpoint=url, intent=INTENTS[0], end_threshold=0.5
    )
    with pytest.raises(UserError, match=r"end_threshold needs the simulator's P\(end\), which `transformers serve`"):
        load_simulator(config)


def test_vllm_p_end_matches_the_local_backend(leaver, simulator, vllm_server):  # noqa: F811
    url = vllm_server(leaver, "leaver")
    backend = CompletionsSimulator(Endpoint(base_url=url, model="leaver"), leaver, server="vllm", template="chatml")
    local = simulator.generate(prompts(), seed=0, max_new_tokens=1)
    served = turns(backend, TurnSampling(max_new_tokens=2))
    assert [t.p_end for t in served] == pytest.approx([t.p_end for t in local], rel=VLLM_TOLERANCE)
    # Threshold 0: everyone leaves at once, from P(end) alone; 1: nobody does.
    assert all(t.is_end for t in turns(backend, TurnSampling(end_threshold=0.0)))
    assert not any(t.is_end for t in turns(backend, TurnSampling(max_new_tokens=2, end_threshold=1.0)))

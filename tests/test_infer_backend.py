"""Both simulator backends are what `infer/backend.py` says a backend is: real objects (a local tiny
Llama, and the completions backend over its folder) pass the runtime check, and their methods have
the protocol's signatures exactly, so that the loop, test, chat and serve can drive either."""

from __future__ import annotations

import inspect

import pytest

from userlm.endpoint import Endpoint
from userlm.infer.backend import SimulatorBackend
from userlm.infer.completions import CompletionsSimulator
from userlm.infer.simulator import UserSimulator

METHODS = ("agenerate", "prompt_error", "prompt_tokens")


@pytest.fixture
def backends(tiny_llama):
    folder = tiny_llama()
    local = UserSimulator.load(folder, template="chatml")
    # Nothing listens on the discard port: the backend is built, no request is made.
    served = CompletionsSimulator(Endpoint(base_url="http://127.0.0.1:9/v1", model="m"), folder, template="chatml")
    return [local, served]


def test_both_backends_are_simulator_backends(backends):
    for backend in backends:
        assert isinstance(backend, SimulatorBackend)
        for name in METHODS:
            assert inspect.signature(getattr(type(backend), name)) == inspect.signature(
                getattr(SimulatorBackend, name)
            ), f"{type(backend).__name__}.{name}"
        assert inspect.iscoroutinefunction(backend.agenerate)
        assert {"backend", "template"} <= set(backend.settings)

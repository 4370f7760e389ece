"""`userlm serve`'s dynamic batching (`infer/serve/engine.py`), in-process on a real programmed
Llama: requests sharing generate calls, some of whose drafts the guardrails reject and redraw
from their prompt's cache in the same decode loop, get exactly the turns (text, events, attempts) that
`UserSimulator.generate` gives each alone for its seed."""

from __future__ import annotations

import asyncio

from tests.conftest import SERVED_INTENT
from userlm.infer.guardrails import Guardrails
from userlm.infer.serve.engine import BatchingEngine, Sampling
from userlm.infer.simulator import UserSimulator
from userlm.infer.turn_sampling import TurnSampling

# "Please help me now" (4 words) passes min_words 4; "Hello there now" (3) is rejected and redrawn.
GUARDRAILS = Guardrails(min_words=4, max_attempts=6)
SAMPLING = Sampling(guardrails=GUARDRAILS, turn=TurnSampling(max_new_tokens=8))
PROMPT = [{"role": "system", "content": SERVED_INTENT}]


def test_batched_requests_get_the_turns_each_gets_alone(served_persona):
    simulator = UserSimulator.load(served_persona)
    seeds = list(range(8))

    async def run():
        engine = BatchingEngine(simulator, max_batch_size=32, wait_s=0.01)
        await engine.start()
        try:
            answers = await asyncio.gather(*(engine.generate([PROMPT], [seed], SAMPLING) for seed in seeds))
            return [turn for [turn] in answers], engine.stats
        finally:
            await engine.stop()

    turns, stats = asyncio.run(run())
    alone = [simulator.generate([PROMPT], guardrails=GUARDRAILS, seed=[seed], max_new_tokens=8)[0] for seed in seeds]
    # Events included: a row that ended early in a shared call records nothing while the others go on.
    assert [(t.text, t.events, t.attempts) for t in turns] == [(t.text, t.events, t.attempts) for t in alone]
    assert all(t.text == "Please help me now" for t in turns)
    assert any(t.attempts > 1 for t in turns) and any(t.attempts == 1 for t in turns)
    # One call, and the prompt read once: the eight equal prompts share a row, and redraws decode from its cache.
    assert stats["generate_calls"] == 1 and stats["prompt_tokens"] == simulator.prompt_tokens(PROMPT)

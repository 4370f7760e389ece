"""What a simulator backend is: the local model (`infer/simulator.py` `UserSimulator`) and a model
behind a completions server (`infer/completions.py` `CompletionsSimulator`) both are one, and the
simulation loop, `userlm test`, `userlm chat` and `userlm serve` drive either through it alone.

A backend turns flipped prompts into next user turns (`GeneratedTurn`: the text, whether the user
left, the guardrails' events, P(end)), one seed per prompt, under the guardrails and the sampling
of `infer/turn_sampling.py`; a prompt it cannot take (over the context, a server error) gets the
exception in its place, so that one bad prompt never stops the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .turn_sampling import DEFAULT_SAMPLING, TurnSampling

if TYPE_CHECKING:  # annotations only: importing this module loads no model code
    from userlm.errors import UserError
    from userlm.flipped.templates import FlippedTemplate

    from .guardrails import Guardrails
    from .simulator import GeneratedTurn


@runtime_checkable
class SimulatorBackend(Protocol):
    tokenizer: object  # the checkpoint's tokenizer: token counts, the template's rendering
    template: FlippedTemplate
    context_length: int | None

    @property
    def settings(self) -> dict:
        """What records and conversation ids say the simulator was (backend, model, template)."""
        ...

    def prompt_tokens(self, prompt: list[dict]) -> int: ...

    def prompt_error(
        self, prompt: list[dict], max_new_tokens: int = DEFAULT_SAMPLING.max_new_tokens
    ) -> UserError | None: ...

    async def agenerate(
        self,
        prompts: list[list[dict]],
        *,
        seed: int | list[int] = 0,
        guardrails: Guardrails | None = None,
        sampling: TurnSampling = DEFAULT_SAMPLING,
        stop: tuple[str, ...] = (),
    ) -> list[GeneratedTurn | Exception]: ...

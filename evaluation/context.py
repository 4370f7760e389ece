"""Inputs longer than a checkpoint's context (issue 11): left out before that checkpoint runs, and counted.

`max_sample_chars` already bounds every subset in characters, the same for every
checkpoint. A checkpoint whose context is shorter than that still allows (a 2,048-token
model and a 6,000-character sample, say) would otherwise fail or run past its positions
mid-way. So once it is loaded, every prompt of every subset is measured in its own tokens
(plus the tokens it may generate, or the target it scores) and what does not fit is left
out of that checkpoint's measures; the report gives the count per subset. A conversation's
decision points are kept up to the first whose prompt does not fit, as `max_sample_chars` cuts them.
"""

from __future__ import annotations

from dataclasses import replace

from userlm.flipped.format import system_text
from userlm.flipped.templates import render
from userlm.infer.loading import context_length

from .config import EvalConfig
from .persona_contrast import ELABORATE
from .subsets import EvalSubsets

# Per message, more than any template adds around its content (headers, end-of-turn tokens).
TEMPLATE_TOKENS_PER_MESSAGE = 8


def fit_to_context(subsets: EvalSubsets, simulator, config: EvalConfig) -> tuple[EvalSubsets, dict[str, int]]:
    """The subsets without what exceeds the simulator's context, and how many items each lost."""
    limit = context_length(simulator.model.config, simulator.tokenizer)
    if limit is None:
        return subsets, {}
    budget = max(config.max_new_tokens, config.termination_max_new_tokens)

    def fits(prompt: list[dict], completion: str = "") -> bool:
        chars = sum(len(m["content"]) for m in prompt) + len(completion)
        # A token covers at least one UTF-8 byte (4 at most per character): most prompts fit
        # by this bound without being tokenised.
        if 4 * chars + TEMPLATE_TOKENS_PER_MESSAGE * (len(prompt) + 1) + budget <= limit:
            return True
        text = render(simulator.tokenizer, simulator.template, prompt) + completion
        return (
            len(simulator.tokenizer(text, add_special_tokens=False)["input_ids"]) + TEMPLATE_TOKENS_PER_MESSAGE + budget
            <= limit
        )

    def sample_fits(sample: dict) -> bool:
        return fits(sample["prompt"], sample["completion"][0]["content"])

    def cut_conversations(points: list[dict]) -> list[dict]:
        # By the prompt alone, as subsets.py cuts: a conversation's points before the first too long.
        return [p for p in points if fits(p["prompt"])]

    fitted = replace(
        subsets,
        perplexity=[s for s in subsets.perplexity if sample_fits(s)],
        first_turns=[s for s in subsets.first_turns if sample_fits(s)],
        termination_points=cut_conversations(subsets.termination_points),
        probe_openings=[s for s in subsets.probe_openings if sample_fits(s)],
        diversity=[s for s in subsets.diversity if sample_fits(s)],
        end_points=cut_conversations(subsets.end_points),
        scope_points=cut_conversations(subsets.scope_points),
        persona_users=[u for u in (replace(u, **kept_points(u, fits)) for u in subsets.persona_users) if u.prompts],
        # The longer of the two personas decides.
        contrast_intents=[
            i for i in subsets.contrast_intents if fits([{"role": "system", "content": system_text(i, ELABORATE)}])
        ],
    )
    lost = {
        name: len(getattr(subsets, name)) - len(getattr(fitted, name))
        for name in (
            "perplexity",
            "first_turns",
            "termination_points",
            "probe_openings",
            "diversity",
            "end_points",
            "scope_points",
            "persona_users",
            "contrast_intents",
        )
    }
    return fitted, {name: n for name, n in lost.items() if n}


def kept_points(user, fits) -> dict:
    kept = [(p, t) for p, t in zip(user.prompts, user.real_turns) if fits(p)]
    return {"prompts": [p for p, _ in kept], "real_turns": [t for _, t in kept]}

"""Scoring one checkpoint on the shared subsets, and the human reference on the same subsets.

A checkpoint is loaded with `UserSimulator.load` and what does not fit its context is left
out (and counted); its perplexity of the real user turns and its P(end) at the decision
points are scored, then it generates (unguarded) first turns, repeated simulations,
termination decisions, probe replies, held-out users' turns under their personas and
first turns under two opposite personas, which the word metrics, the naturalness
detector, the judge and the style measures measure. The k-th prompt of a stage is sampled
with seed base + k; each stage's seconds are recorded.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager

import torch

from userlm.flipped.format import END_MARKER
from userlm.infer.turn_sampling import DEFAULT_SAMPLING

from .config import CheckpointSpec, EvalConfig
from .context import fit_to_context
from .end_probability import end_probability_metrics, end_scores, expected_f1
from .intervals import figure, mean_figure, share_figure
from .judge import adherence
from .leave_probe import leave_probe
from .metrics import word_metrics
from .obeys_scope import obeys_scope
from .persona_contrast import contrast_prompts, persona_contrast
from .persona_fidelity import HeldOutUser, style_agreement
from .probes import build_probes
from .subsets import EvalSubsets, intent_of
from .termination import termination_f1

# Seed bases of the stages after the first turns and termination (which use the seed itself).
SIMULATION_SEED_OFFSET = 10_000
PROBE_SEED_OFFSET = 20_000
PERSONA_SEED_OFFSET = 30_000
CONTRAST_SEED_OFFSET = 40_000
# The top-p of every generation here (the simulators' default, temperature 1): the expected
# termination F1 reads P(end) through the same cut.
SAMPLING_TOP_P = DEFAULT_SAMPLING.top_p


def seeds_note(seed: int) -> str:
    return (
        f"selection seed {seed}; the k-th prompt of a stage is sampled with seed base + k, bases "
        f"{seed} (first turns, termination), {seed + SIMULATION_SEED_OFFSET} "
        f"(simulations), {seed + PROBE_SEED_OFFSET} (probes), "
        f"{seed + PERSONA_SEED_OFFSET} (persona turns), "
        f"{seed + CONTRAST_SEED_OFFSET} (both personas of the contrast probe); "
        "P(end) and perplexity sample nothing"
    )


def human_reference(subsets: EvalSubsets, detector, seed: int) -> dict:
    """The word metrics and naturalness of the real first turns of the same intents, and the held-out
    users' split-half persona agreement: humans on this test set."""
    turns = [s["completion"][0]["content"] for s in subsets.first_turns]
    intents = [intent_of(s) for s in subsets.first_turns]
    result = word_metrics(turns, intents, [], seed=seed)
    result["naturalness"] = naturalness(detector, turns, intents, seed)
    if subsets.persona_users:
        result["persona_fidelity"] = user_agreement(
            [u.real_turns for u in subsets.persona_users], subsets.persona_users, seed
        )
    return result


def naturalness(detector, texts: list[str], intents: list[str], seed: int) -> dict:
    """The share of texts the detector calls human (probability above one half,
    as naturalness.human_share), by intent."""
    return mean_figure([p > 0.5 for p in detector(texts)], seed=seed, ids=intents, unit="intent", scale=100)


def user_agreement(turn_sets: list[list[str]], users: list[HeldOutUser], seed: int) -> dict:
    """Persona fidelity's style agreement, with its interval over users (persona_fidelity.style_agreement)."""
    return style_agreement(turn_sets, [u.reference for u in users], [u.user for u in users], seed=seed)


def generate_texts(
    simulator, prompts: list[list[dict]], config: EvalConfig, *, seed: int, desc: str, max_new_tokens: int | None = None
) -> list[str]:
    """One unguarded turn per prompt, in prompt order, of at most `max_new_tokens` (default: the config's)
    tokens; an END turn is the end marker."""
    from tqdm.auto import tqdm

    texts: list[str] = []
    with tqdm(total=len(prompts), desc=desc, unit="turn", disable=not config.progress) as bar:
        for start in range(0, len(prompts), config.batch_size):
            batch = prompts[start : start + config.batch_size]
            turns = simulator.generate(
                batch, guardrails=None, seed=seed + start, max_new_tokens=max_new_tokens or config.max_new_tokens
            )
            texts.extend(END_MARKER if t.is_end else t.text for t in turns)
            bar.update(len(batch))
    return texts


def perplexities(simulator, samples: list[dict], config: EvalConfig, name: str) -> dict:
    """Perplexity of the real user turns with the intent, and with the system message emptied."""
    from .perplexity import completion_nll, without_intent

    result = {}
    for key, scored, label in (
        ("with_intent", samples, "ppl"),
        ("without_intent", [without_intent(s) for s in samples], "ppl-no-intent"),
    ):
        nlls = completion_nll(
            simulator.model,
            simulator.tokenizer,
            simulator.template,
            scored,
            batch_size=max(1, config.batch_size // 2),
            progress=config.progress,
            desc=f"{name} {label}",
        )
        # perplexity.perplexity pooled over samples, resampled by conversation (a
        # conversation's turns share its context).
        result[f"perplexity_{key}"] = {
            **figure(
                "perplexity",
                [list(pair) for pair in nlls],
                seed=config.seed,
                ids=[s["conversation_id"] for s in samples],
                unit="conversation",
            ),
            "tokens": sum(n for _, n in nlls),
        }
    return result


def teacher_forced(simulator, config: EvalConfig) -> torch.autocast:
    """bf16 autocast for the forward-only passes where `bf16` asks for it (a no-op on a bf16 model)."""
    device = next(simulator.model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)


@contextmanager
def timed(seconds: dict, stage: str):
    """Record the wall-clock seconds of one stage, so sample sizes can be chosen for a time budget."""
    started = time.monotonic()
    yield
    seconds[stage] = round(time.monotonic() - started, 1)


def persona_fidelity(simulator, users: list[HeldOutUser], config: EvalConfig, name: str) -> dict:
    """Each held-out user's scored turns written with their persona, measured against their reference half."""
    prompts = [p for u in users for p in u.prompts]
    texts = generate_texts(
        simulator, prompts, config, seed=config.seed + PERSONA_SEED_OFFSET, desc=f"{name} persona turns"
    )
    groups, start = [], 0
    for user in users:
        groups.append(texts[start : start + len(user.prompts)])
        start += len(user.prompts)
    result = user_agreement(groups, users, config.seed)
    result["examples"] = [
        {"persona_reference": u.reference["buckets"], "real": u.real_turns[0], "generated": g[0]}
        for u, g in list(zip(users, groups))[:2]
    ]
    return result


def contrast(simulator, intents: list[str], config: EvalConfig, name: str) -> dict:
    """The same intents' first turns under the terse and the elaborate persona, with the same seeds."""
    terse, elaborate = contrast_prompts(intents)
    seed = config.seed + CONTRAST_SEED_OFFSET
    full = config.contrast_max_new_tokens  # full-length turns: a cut elaborate turn shrinks the contrast
    terse_turns = generate_texts(simulator, terse, config, seed=seed, desc=f"{name} terse persona", max_new_tokens=full)
    elaborate_turns = generate_texts(
        simulator, elaborate, config, seed=seed, desc=f"{name} elaborate persona", max_new_tokens=full
    )
    # The value is the mean of each intent's difference: its interval is over intents.
    return persona_contrast(terse_turns, elaborate_turns, intents, seed=config.seed)


def score_checkpoint(spec: CheckpointSpec, subsets: EvalSubsets, judge, detector, config: EvalConfig) -> dict:
    from userlm.infer.simulator import UserSimulator

    started = time.monotonic()
    seconds: dict[str, float] = {}
    with timed(seconds, "load"):
        simulator = UserSimulator.load(spec.path, template=spec.template)
        subsets, over_context = fit_to_context(subsets, simulator, config)
    result: dict = {
        "path": str(spec.path),
        "template": simulator.template.name,
        "prompted": spec.template is not None,
        "tokenizer": f"{type(simulator.tokenizer).__name__}, {len(simulator.tokenizer)} tokens",
        "left_out_over_context": over_context,
    }
    if subsets.perplexity:
        with timed(seconds, "perplexity"), teacher_forced(simulator, config):
            result.update(perplexities(simulator, subsets.perplexity, config, spec.name))

    intents = [intent_of(s) for s in subsets.first_turns]
    with timed(seconds, "first turns and simulations"):
        first = generate_texts(
            simulator,
            [s["prompt"][:1] for s in subsets.first_turns],
            config,
            seed=config.seed,
            desc=f"{spec.name} first turns",
        )
        # All simulations in one stream of batches; each row has its own seed.
        repeats = config.simulations_per_intent
        simulated = generate_texts(
            simulator,
            [s["prompt"][:1] for s in subsets.diversity for _ in range(repeats)],
            config,
            seed=config.seed + SIMULATION_SEED_OFFSET,
            desc=f"{spec.name} simulations",
        )
    result.update(
        word_metrics(
            first, intents, [simulated[k : k + repeats] for k in range(0, len(simulated), repeats)], seed=config.seed
        )
    )
    spoken = [(t, i) for t, i in zip(first, intents) if t != END_MARKER]
    if spoken:
        result["naturalness"] = naturalness(detector, [t for t, _ in spoken], [i for _, i in spoken], config.seed)

    if subsets.termination_points:
        with timed(seconds, "termination F1"):
            result["termination_f1"] = termination_f1(
                simulator,
                subsets.termination_points,
                seed=config.seed,
                max_new_tokens=config.termination_max_new_tokens,
                batch_size=config.batch_size,
                progress=config.progress,
            )
    if subsets.end_points:
        with timed(seconds, "P(end)"), teacher_forced(simulator, config):
            probabilities, sampled = end_scores(
                simulator,
                subsets.end_points,
                top_p=SAMPLING_TOP_P,
                batch_size=config.batch_size,
                progress=config.progress,
                desc=f"{spec.name} P(end)",
            )
        real_ends = [p["is_end"] for p in subsets.end_points]
        conversations = [p["conversation_id"] for p in subsets.end_points]
        result["termination_auc"] = end_probability_metrics(
            probabilities, real_ends, conversations=conversations, seed=config.seed
        )
        result["termination_expected_f1"] = expected_f1(
            sampled, real_ends, conversations=conversations, seed=config.seed
        )
    if subsets.scope_points:
        with timed(seconds, "obeys scope"), teacher_forced(simulator, config):
            result["termination_obeys_scope"] = obeys_scope(
                simulator,
                subsets.scope_points,
                top_p=SAMPLING_TOP_P,
                seed=config.seed,
                batch_size=config.batch_size,
                progress=config.progress,
                desc=f"{spec.name} obeys scope",
            )
    if config.leave_probe:
        with timed(seconds, "leave probe"), teacher_forced(simulator, config):
            probe = leave_probe(
                simulator,
                config.leave_probes,
                seed=config.seed,
                batch_size=config.batch_size,
                progress=config.progress,
                scale=100,
            )
        # The figure is good minus bad, paired by intent; the means it is made of ride along for the details.
        result["leave_after_good_answer"] = {
            **probe["good_minus_bad"],
            **{k: v for k, v in probe.items() if k not in ("good_minus_bad", "per_intent")},
        }

    for kind in ("role", "intent"):
        probes = build_probes(subsets.probe_openings, kind, config.probes_per_kind, config.seed)
        if probes:
            with timed(seconds, f"{kind} probes"):
                replies = generate_texts(
                    simulator,
                    [p.prompt for p in probes],
                    config,
                    seed=config.seed + PROBE_SEED_OFFSET,
                    desc=f"{spec.name} {kind} probes",
                )
            judged = adherence(judge, probes, replies)
            result[f"{kind}_adherence"] = {
                **judged,
                **share_figure(judged["value"], judged["n"], seed=config.seed, unit="probe"),
            }

    if subsets.persona_users:
        with timed(seconds, "persona fidelity"):
            result["persona_fidelity"] = persona_fidelity(simulator, subsets.persona_users, config, spec.name)
    if subsets.contrast_intents:
        with timed(seconds, "persona contrast"):
            result["persona_contrast"] = contrast(simulator, subsets.contrast_intents, config, spec.name)

    result["examples"] = [{"intent": i, "first_turn": t} for i, t in list(zip(intents, first))[:3]]
    result["stage_seconds"] = seconds
    result["seconds"] = round(time.monotonic() - started, 1)
    del simulator
    gc.collect()
    return result

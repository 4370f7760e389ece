"""Scoring one checkpoint on the shared subsets, and the human reference on the same subsets.

A checkpoint is loaded with `UserSimulator.load`, its perplexity of the real user turns is
scored, then it generates (unguarded) first turns, repeated simulations, termination
decisions and probe replies, which the word metrics, the naturalness detector and the
judge measure. The k-th prompt of a stage is sampled with seed base + k.
"""

from __future__ import annotations

import gc
import time

from userlm.data_prep.format import END_MARKER

from .config import CheckpointSpec, EvalConfig
from .judge import adherence
from .metrics import word_metrics
from .naturalness import human_share
from .probes import build_probes
from .subsets import EvalSubsets, intent_of
from .termination import termination_f1

# Seed bases of the stages after the first turns and termination (which use the seed itself).
SIMULATION_SEED_OFFSET = 10_000
PROBE_SEED_OFFSET = 20_000


def seeds_note(seed: int) -> str:
    return (
        f"selection seed {seed}; the k-th prompt of a stage is sampled with seed base + k, bases "
        f"{seed} (first turns, termination), {seed + SIMULATION_SEED_OFFSET} (simulations), {seed + PROBE_SEED_OFFSET} (probes)"
    )


def human_reference(subsets: EvalSubsets, detector) -> dict:
    """The word metrics and naturalness of the real first turns of the same intents: humans on this test set."""
    turns = [s["completion"][0]["content"] for s in subsets.first_turns]
    result = word_metrics(turns, [intent_of(s) for s in subsets.first_turns], [])
    result["naturalness"] = {"value": 100 * human_share(detector, turns), "n": len(turns)}
    return result


def generate_texts(simulator, prompts: list[list[dict]], config: EvalConfig, *, seed: int, desc: str) -> list[str]:
    """One unguarded turn per prompt, in prompt order; an END turn is the end marker."""
    from tqdm.auto import tqdm

    texts: list[str] = []
    with tqdm(total=len(prompts), desc=desc, unit="turn", disable=not config.progress) as bar:
        for start in range(0, len(prompts), config.batch_size):
            batch = prompts[start : start + config.batch_size]
            turns = simulator.generate(batch, guardrails=None, seed=seed + start, max_new_tokens=config.max_new_tokens)
            texts.extend(END_MARKER if t.is_end else t.text for t in turns)
            bar.update(len(batch))
    return texts


def perplexities(simulator, samples: list[dict], config: EvalConfig, name: str) -> dict:
    """Perplexity of the real user turns with the intent, and with the system message emptied."""
    from .perplexity import completion_nll, perplexity, without_intent

    result = {}
    for key, scored, label in (("with_intent", samples, "ppl"), ("without_intent", [without_intent(s) for s in samples], "ppl-no-intent")):
        nlls = completion_nll(
            simulator.model, simulator.tokenizer, simulator.template, scored,
            batch_size=max(1, config.batch_size // 2), progress=config.progress, desc=f"{name} {label}",
        )
        result[f"perplexity_{key}"] = {"value": perplexity(nlls), "n": len(nlls), "tokens": sum(n for _, n in nlls)}
    return result


def score_checkpoint(spec: CheckpointSpec, subsets: EvalSubsets, judge, detector, config: EvalConfig) -> dict:
    from userlm.infer.simulator import UserSimulator

    started = time.monotonic()
    simulator = UserSimulator.load(spec.path, template=spec.template)
    result: dict = {
        "path": str(spec.path),
        "template": simulator.template.name,
        "prompted": spec.template is not None,
        "tokenizer": f"{type(simulator.tokenizer).__name__}, {len(simulator.tokenizer)} tokens",
    }
    if subsets.perplexity:
        result.update(perplexities(simulator, subsets.perplexity, config, spec.name))

    intents = [intent_of(s) for s in subsets.first_turns]
    first = generate_texts(simulator, [s["prompt"][:1] for s in subsets.first_turns], config, seed=config.seed, desc=f"{spec.name} first turns")
    # All simulations in one stream of batches; each row has its own seed.
    repeats = config.simulations_per_intent
    simulated = generate_texts(
        simulator, [s["prompt"][:1] for s in subsets.diversity for _ in range(repeats)], config,
        seed=config.seed + SIMULATION_SEED_OFFSET, desc=f"{spec.name} simulations",
    )
    result.update(word_metrics(first, intents, [simulated[k : k + repeats] for k in range(0, len(simulated), repeats)]))
    spoken = [t for t in first if t != END_MARKER]
    if spoken:
        result["naturalness"] = {"value": 100 * human_share(detector, spoken), "n": len(spoken)}

    if subsets.termination_points:
        termination = termination_f1(
            simulator, subsets.termination_points, seed=config.seed, max_new_tokens=config.termination_max_new_tokens,
            batch_size=config.batch_size, progress=config.progress,
        )
        result["termination_f1"] = {"value": 100 * termination.pop("f1"), "n": termination["points"], **termination}

    for kind in ("role", "intent"):
        probes = build_probes(subsets.probe_openings, kind, config.probes_per_kind, config.seed)
        if probes:
            replies = generate_texts(simulator, [p.prompt for p in probes], config, seed=config.seed + PROBE_SEED_OFFSET, desc=f"{spec.name} {kind} probes")
            result[f"{kind}_adherence"] = adherence(judge, probes, replies)

    result["examples"] = [{"intent": i, "first_turn": t} for i, t in list(zip(intents, first))[:3]]
    result["seconds"] = round(time.monotonic() - started, 1)
    del simulator
    gc.collect()
    return result

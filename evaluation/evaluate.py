"""`evaluate(...)`: the paper's metrics for any number of checkpoints on one held-out set.

Read top to bottom: load the flipped test samples, draw the evaluation subsets once
(seeded, shared by every checkpoint so the columns compare like with like), measure the
human reference on the same subsets, then for each checkpoint load it with
`UserSimulator.load`, score perplexity, generate, judge, and finally write
metrics.json, report.md and report.html into the output folder.

A checkpoint is `NAME=PATH`, or `NAME=PATH@TEMPLATE` to evaluate an ordinary instruct
model through a flipped template (the "prompted base" baseline, e.g. `base=DIR@chatml`).
"""

from __future__ import annotations

import gc
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from userlm.data_prep.format import END_MARKER
from userlm.data_prep.templates import TEMPLATES
from userlm.errors import UserError

from . import metrics
from .judge import EndpointJudge, HeuristicJudge
from .naturalness import StylometricDetector, human_share, load_detector
from .probes import build_probes
from .published import PUBLISHED, SOURCE
from .termination import decision_points, termination_f1


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    path: Path
    # None: the checkpoint's own saved flipped template; a name: a prompted instruct model.
    template: str | None = None


def parse_checkpoint(text: str) -> CheckpointSpec:
    """`NAME=PATH` or `NAME=PATH@TEMPLATE`."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UserError(f"Give each checkpoint as NAME=PATH or NAME=PATH@TEMPLATE, not {text!r}.")
    path, at, template = rest.rpartition("@")
    if not at or template not in TEMPLATES:
        path, template = rest, None
    return CheckpointSpec(name, Path(path), template)


@dataclass
class EvalConfig:
    seed: int = 0
    # Real samples scored for perplexity (any turn, END samples included).
    perplexity_samples: int = 200
    # Samples (prompt + target) longer than this many characters are left out of perplexity,
    # termination (whole conversations) and probes, and counted; characters, not tokens, so
    # every checkpoint sees one set.
    max_sample_chars: int = 6000
    # Distinct intents whose first turn is generated (first-turn diversity, intent decomposition, naturalness).
    first_turn_intents: int = 100
    # Held-out conversations whose every decision point is scored for termination.
    termination_conversations: int = 50
    probes_per_kind: int = 50
    diversity_intents: int = 10
    simulations_per_intent: int = 5
    max_new_tokens: int = 64
    termination_max_new_tokens: int = 16
    batch_size: int = 8
    judge: object | None = None  # a userlm.endpoint.Endpoint, else the offline heuristic judge
    naturalness_detector: str | None = None  # module:function, else the stylometric baseline
    progress: bool = True


@dataclass
class EvalSubsets:
    perplexity: list[dict]
    first_turns: list[dict]
    termination_points: list[dict]
    probe_openings: list[dict]
    diversity: list[dict]
    counts: dict = field(default_factory=dict)


def read_samples(path: Path) -> tuple[list[dict], list[dict]]:
    """Flipped samples from a JSONL file, and the lines that could not be used (with reasons)."""
    if not path.is_file():
        raise UserError(f"The test data {path} does not exist; give the test.jsonl that `userlm prep` wrote.")
    samples, bad = [], []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError:
                bad.append({"line": number, "reason": "invalid_json"})
                continue
            if not isinstance(sample, dict) or not sample.get("prompt") or not sample.get("completion"):
                bad.append({"line": number, "reason": "not_a_flipped_sample"})
                continue
            samples.append(sample)
    if not samples:
        raise UserError(f"{path} holds no flipped samples; give the test.jsonl that `userlm prep` wrote.")
    return samples, bad


def sample_chars(sample: dict) -> int:
    return sum(len(m["content"]) for m in sample["prompt"]) + len(sample["completion"][0]["content"])


def draw_subsets(samples: list[dict], config: EvalConfig) -> EvalSubsets:
    rng = random.Random(config.seed)
    fits = [s for s in samples if sample_chars(s) <= config.max_sample_chars]
    too_long = len(samples) - len(fits)
    scored = rng.sample(fits, min(config.perplexity_samples, len(fits)))

    # One first turn per distinct intent, so diversity compares different intents.
    by_intent: dict[str, dict] = {}
    for s in samples:
        if s["turn_index"] == 0 and not s["is_end"] and s["prompt"][0]["role"] == "system":
            by_intent.setdefault(s["prompt"][0]["content"], s)
    openings = list(by_intent.values())
    rng.shuffle(openings)
    first_turns = openings[: config.first_turn_intents]

    # Whole conversations, so each keeps all its points; its last point is its longest, and
    # dropping only over-long points would drop the END points first.
    points = decision_points(samples)
    longest: dict[str, int] = {}
    for p in points:
        longest[p["conversation_id"]] = max(longest.get(p["conversation_id"], 0), sample_chars(p))
    eligible = sorted(c for c, n in longest.items() if n <= config.max_sample_chars)
    chosen = set(rng.sample(eligible, min(config.termination_conversations, len(eligible))))
    return EvalSubsets(
        perplexity=scored,
        first_turns=first_turns,
        termination_points=[p for p in points if p["conversation_id"] in chosen],
        probe_openings=[s for s in first_turns if sample_chars(s) <= config.max_sample_chars][: config.probes_per_kind],
        diversity=first_turns[: config.diversity_intents],
        counts={
            "samples_longer_than_max_chars": too_long,
            "conversations_longer_than_max_chars": len(longest) - len(eligible),
            "termination_conversations": len(chosen),
            "distinct_intents_available": len(openings),
        },
    )


def intent_of(sample: dict) -> str:
    """The intent alone: the system message before the persona block (format.system_text)."""
    return sample["prompt"][0]["content"].split("\n\n", 1)[0]


def word_metrics(first_turns: list[str], intents: list[str], groups: list[list[str]]) -> dict:
    """First-turn diversity, intent decomposition, within-intent diversity and distinct-n, in percent.

    END turns carry no words; they are left out of the word metrics and counted.
    """
    kept = [(t, i) for t, i in zip(first_turns, intents) if t.strip() != END_MARKER]
    texts = [t for t, _ in kept]
    result = {"ended_at_first_turn": len(first_turns) - len(kept)}
    if len(texts) >= 2:
        result["first_turn_diversity"] = {"value": 100 * metrics.pairwise_diversity(texts), "n": len(texts)}
    if texts:
        result["intent_decomposition"] = {"value": 100 * metrics.intent_decomposition(texts, [i for _, i in kept]), "n": len(texts)}
        result["distinct_1"] = {"value": 100 * metrics.distinct_n(texts, 1), "n": len(texts)}
        result["distinct_2"] = {"value": 100 * metrics.distinct_n(texts, 2), "n": len(texts)}
    usable = [[t for t in g if t.strip() != END_MARKER] for g in groups]
    usable = [g for g in usable if len(g) >= 2]
    if usable:
        result["within_intent_diversity"] = {
            "value": 100 * metrics.within_intent_diversity(usable),
            "n": len(usable),
            "simulations": sum(map(len, usable)),
            "intents_left_out": len(groups) - len(usable),
        }
    return result


def fit_naturalness(samples: list[dict], scored: list[dict], config: EvalConfig):
    """The configured detector, or the stylometric baseline fitted on turns not being scored."""
    if config.naturalness_detector:
        detector = load_detector(config.naturalness_detector)
        return detector, getattr(detector, "label", f"detector {config.naturalness_detector}")
    rng = random.Random(config.seed)
    held = {(s["conversation_id"], s["turn_index"]) for s in scored}
    human = [s["completion"][0]["content"] for s in samples if not s["is_end"] and (s["conversation_id"], s["turn_index"]) not in held]
    assistant = sorted({m["content"] for s in samples for m in s["prompt"] if m["role"] == "assistant"})
    human = rng.sample(human, min(500, len(human)))
    assistant = rng.sample(assistant, min(500, len(assistant)))
    return StylometricDetector(human, assistant), StylometricDetector.label


def human_reference(subsets: EvalSubsets, detector) -> dict:
    """The word metrics of the real first turns of the same intents: humans on this test set."""
    turns = [s["completion"][0]["content"] for s in subsets.first_turns]
    intents = [intent_of(s) for s in subsets.first_turns]
    result = word_metrics(turns, intents, [])
    result["naturalness"] = {"value": 100 * human_share(detector, turns), "n": len(turns)}
    return result


def generate_texts(simulator, prompts: list[list[dict]], config: EvalConfig, *, seed: int, desc: str) -> list[str]:
    from tqdm.auto import tqdm

    texts: list[str] = []
    with tqdm(total=len(prompts), desc=desc, unit="turn", disable=not config.progress) as bar:
        for start in range(0, len(prompts), config.batch_size):
            batch = prompts[start : start + config.batch_size]
            turns = simulator.generate(batch, guardrails=None, seed=seed + start, max_new_tokens=config.max_new_tokens)
            texts.extend(END_MARKER if t.is_end else t.text for t in turns)
            bar.update(len(batch))
    return texts


def adherence(judge, probes, replies: list[str]) -> dict:
    verdicts = judge.judge(probes, replies)
    judged = [v for v in verdicts if v is not None]
    return {
        "value": 100 * sum(judged) / len(judged) if judged else None,
        "n": len(judged),
        "unjudged": len(verdicts) - len(judged),
        "examples": [{"assistant": p.assistant, "reply": r, "adhered": v} for p, r, v in list(zip(probes, replies, verdicts))[:3]],
    }


def evaluate_checkpoint(spec: CheckpointSpec, subsets: EvalSubsets, judge, detector, config: EvalConfig) -> dict:
    from userlm.infer.simulator import UserSimulator

    from .perplexity import completion_nll, perplexity, without_intent

    started = time.monotonic()
    simulator = UserSimulator.load(spec.path, template=spec.template)
    result: dict = {
        "path": str(spec.path),
        "template": simulator.template.name,
        "prompted": spec.template is not None,
        "tokenizer": f"{type(simulator.tokenizer).__name__}, {len(simulator.tokenizer)} tokens",
    }
    args = dict(batch_size=max(1, config.batch_size // 2), progress=config.progress)
    with_intent = completion_nll(simulator.model, simulator.tokenizer, simulator.template, subsets.perplexity, desc=f"{spec.name} ppl", **args)
    no_intent = completion_nll(
        simulator.model, simulator.tokenizer, simulator.template, [without_intent(s) for s in subsets.perplexity], desc=f"{spec.name} ppl-no-intent", **args
    )
    tokens = sum(n for _, n in with_intent)
    result["perplexity_with_intent"] = {"value": perplexity(with_intent), "n": len(with_intent), "tokens": tokens}
    result["perplexity_without_intent"] = {"value": perplexity(no_intent), "n": len(no_intent), "tokens": sum(n for _, n in no_intent)}

    intents = [intent_of(s) for s in subsets.first_turns]
    first = generate_texts(simulator, [[s["prompt"][0]] for s in subsets.first_turns], config, seed=config.seed, desc=f"{spec.name} first turns")
    # All simulations in one stream of batches; each row has its own seed (the simulator's seed + row).
    repeats = config.simulations_per_intent
    simulated = generate_texts(
        simulator, [[s["prompt"][0]] for s in subsets.diversity for _ in range(repeats)], config, seed=config.seed + 10_000, desc=f"{spec.name} simulations"
    )
    groups = [simulated[k : k + repeats] for k in range(0, len(simulated), repeats)]
    result.update(word_metrics(first, intents, groups))
    spoken = [t for t in first if t != END_MARKER]
    if spoken:
        result["naturalness"] = {"value": 100 * human_share(detector, spoken), "n": len(spoken)}

    termination = termination_f1(
        simulator,
        subsets.termination_points,
        seed=config.seed,
        max_new_tokens=config.termination_max_new_tokens,
        batch_size=config.batch_size,
        progress=config.progress,
    )
    result["termination_f1"] = {"value": 100 * termination["f1"], "n": termination["points"], **{k: v for k, v in termination.items() if k != "f1"}}

    for kind in ("role", "intent"):
        probes = build_probes(subsets.probe_openings, kind, config.probes_per_kind, config.seed)
        replies = generate_texts(simulator, [p.prompt for p in probes], config, seed=config.seed + 20_000, desc=f"{spec.name} {kind} probes")
        result[f"{kind}_adherence"] = adherence(judge, probes, replies)

    result["examples"] = [{"intent": i, "first_turn": t} for i, t in list(zip(intents, first))[:3]]
    result["seconds"] = round(time.monotonic() - started, 1)
    del simulator
    gc.collect()
    return result


def evaluate(checkpoints: list[CheckpointSpec], data: Path, out_dir: Path, config: EvalConfig | None = None) -> dict:
    """Evaluate every checkpoint on the test data, write metrics.json, report.md and report.html; return the metrics."""
    from .report import print_summary, write_report

    config = config or EvalConfig()
    if not checkpoints:
        raise UserError("Name at least one checkpoint to evaluate with --checkpoint NAME=PATH.")
    if len({c.name for c in checkpoints}) != len(checkpoints):
        raise UserError("Give every checkpoint a different NAME.")
    samples, bad_lines = read_samples(Path(data))
    subsets = draw_subsets(samples, config)
    if len(subsets.first_turns) < 2:
        raise UserError("The test data has fewer than two distinct intents; give a larger test split.")
    judge = EndpointJudge(config.judge) if config.judge is not None else HeuristicJudge()
    detector, detector_label = fit_naturalness(samples, subsets.first_turns, config)

    results = {
        "settings": {
            **{k: v for k, v in asdict(config).items() if k not in ("judge", "progress")},
            "data": str(data),
            "word_tokenisation": metrics.WORD_TOKENISATION,
            "judge": judge.label,
            "naturalness_detector": detector_label,
            "generation": "unguarded sampling (UserSimulator.generate, guardrails=None), temperature 1.0, top_p 0.8",
            "perplexity": "exp(mean NLL per scored token) over the target user turn and its end-of-turn token, the tokens training scores, "
            "in each checkpoint's own tokenizer (the end marker is one token where the vocabulary has it, several where it does not)",
            "seeds": f"selection seed {config.seed}; the k-th prompt of a stage is sampled with seed base + k, bases "
            f"{config.seed} (first turns, termination), {config.seed + 10_000} (simulations), {config.seed + 20_000} (probes)",
        },
        "data": {"samples": len(samples), "unusable_lines": len(bad_lines), "unusable_examples": bad_lines[:20], **subsets.counts},
        "human": human_reference(subsets, detector),
        "published": {"source": SOURCE, "figures": PUBLISHED},
        "checkpoints": {},
    }
    for spec in checkpoints:
        results["checkpoints"][spec.name] = evaluate_checkpoint(spec, subsets, judge, detector, config)
    write_report(results, Path(out_dir))
    print_summary(results, Path(out_dir))
    return results


# Sized to finish in a few minutes per checkpoint on 2 CPU cores with a 135M model.
QUICKSTART_CONFIG = EvalConfig(
    perplexity_samples=20,
    max_sample_chars=1500,
    first_turn_intents=12,
    termination_conversations=10,
    probes_per_kind=8,
    diversity_intents=3,
    simulations_per_intent=4,
    max_new_tokens=32,
    batch_size=8,
)


def quickstart_eval(simulator_dir: Path, base_dir: Path, test_file: Path, out_dir: Path) -> dict:
    """The quickstart's last step: the prompted base (chatml) against the fine-tuned simulator."""
    checkpoints = [CheckpointSpec("prompted-base", Path(base_dir), "chatml"), CheckpointSpec("simulator", Path(simulator_dir))]
    return evaluate(checkpoints, Path(test_file), Path(out_dir), QUICKSTART_CONFIG)

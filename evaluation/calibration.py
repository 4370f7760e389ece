"""`userlm calibrate`: the end bias (or threshold) that makes a simulator leave, turn by turn, as
often as the real users of the validation split did (issue 25).

Read top to bottom: the validation split's decision points are drawn as `userlm eval` draws
its P(end) points (subsets.py: cut where a prompt outgrows `max_sample_chars`, the intent's
scope sentence taken out, since it states the conversation's length; context.py: what
exceeds the simulator's context left out), and P(end) is read at each, teacher-forced
(end_probability.py). The conversations are split in two halves, seeded: the bias (or
threshold) is fitted on the first and the calibration error is reported on both, the second
being the honest estimate. The result is a YAML file whose `end_bias` and `end_threshold`
the other commands read (`end_calibration=PATH`), and a table.

Per user-turn index t (the decision right after the user's t-th turn and its answer), the
real leave rate is the share of the points at t whose user left there: of the conversations
that reach turn t, the share that end after it. The last bucket, t = 5, holds every point
from the fifth turn on (the rate of leaving at any one of those turns). The simulator's rate
at t is the mean P(end) over the same points. An end bias b adds b to the end marker's logit
before the draw, so P becomes sigmoid(logit(P) + b) exactly and the rate after calibration is
computed from the recorded P's, no second pass; with `mode: threshold` the simulator leaves
iff P >= the threshold. The calibration error is the mean absolute difference between the
real and simulated rates over t = 1..5 (over the buckets that hold points).
"""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from userlm.config import Config, parse_config, to_dict
from userlm.errors import UserError
from userlm.flipped.templates import TEMPLATES

from .config import EvalConfig, parse_checkpoint

TURNS = 5  # turn indices 1..TURNS; the last bucket holds every point from turn TURNS on
HALVES = ("fit", "held_out")
# P's of exactly 0 or 1 (a float rounding) have no logit: they are read this close to the edge.
EDGE = 1e-12
# The keys the other commands read from the file (infer/config.py `end_calibration`); the rest is report data.
BIAS_KEY, THRESHOLD_KEY = "end_bias", "end_threshold"


@dataclass(kw_only=True)
class CalibrateConfig(Config):
    simulator: str = field(
        metadata={
            "help": "the simulator to calibrate: a `userlm train` output folder, a model folder or 'default', "
            f"with @TEMPLATE ({', '.join(TEMPLATES)}) for an instruct model prompted as a user "
            "(as `userlm eval` names a checkpoint, e.g. default@chatml)"
        }
    )
    data: Path = field(
        metadata={"help": "a `userlm prep` output folder (its validation split is read) or the validation.jsonl(.gz)"}
    )
    out: Path = field(default=Path("out/calibrate"), metadata={"help": "folder for end_calibration.yaml and details"})
    calibration_file: Path | None = field(
        default=None,
        metadata={
            "help": "the YAML file the other commands read (end_calibration=PATH); unset: OUT/end_calibration.yaml"
        },
    )
    mode: Literal["bias", "threshold"] = field(
        default="bias",
        metadata={
            "help": "bias: fit the end bias (log-odds added to the end marker before the draw); "
            "threshold: fit a threshold on P(end) instead (the simulator leaves iff P(end) >= it)"
        },
    )
    conversations: int | None = field(
        default=160,
        metadata={
            "min": 2,
            "help": "validation conversations read (one forward pass each, split in a fit half and a held-out "
            "half); unset: all",
        },
    )
    max_sample_chars: int = field(
        default=6000,
        metadata={"min": 1, "help": "a conversation is cut at its first decision point whose prompt is longer"},
    )
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of the conversations drawn and of the halves"})
    batch_size: int = field(default=8, metadata={"min": 1, "help": "rows per forward pass"})
    bf16: bool | Literal["auto"] = field(
        default=False,
        metadata={"help": "read P(end) under bf16 autocast (auto: where the hardware has bf16), as `userlm eval`"},
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    path_keys = ("simulator",)

    def validate(self) -> None:
        if Path(self.data).is_dir():
            from userlm.flipped.samples import split_file

            self.data = split_file(self.data, "validation")  # never the test split: eval measures on it
        if not Path(self.data).is_file():
            raise UserError(
                f"The validation data {self.data} does not exist; give the folder (or its validation.jsonl) "
                "that `userlm prep` wrote."
            )
        if self.calibration_file is None:
            self.calibration_file = Path(self.out) / "end_calibration.yaml"

    def eval_view(self) -> EvalConfig:
        """eval's config for its P(end) points on this split, every other subset off: its rules, not a copy of them.
        Its `out` is never written."""
        return EvalConfig(
            checkpoints=[f"simulator={self.simulator}"],
            data=self.data,
            out=Path(self.out) / "eval-rules",
            seed=self.seed,
            max_sample_chars=self.max_sample_chars,
            end_probability_conversations=self.conversations,
            perplexity_samples=0,
            first_turn_intents=2,
            termination_conversations=0,
            probes_per_kind=0,
            diversity_intents=0,
            scope_conversations=0,
            persona_users=0,
            contrast_intents=0,
            # Room for the end turn, which a vocabulary without the marker spells in several tokens.
            max_new_tokens=16,
            termination_max_new_tokens=16,
            batch_size=self.batch_size,
            bf16=self.bf16,
            progress=self.progress,
        )


def main(words: list[str]) -> int:
    config = parse_config(
        CalibrateConfig,
        words,
        prog="userlm calibrate",
        description="Fit the end bias (or threshold) that makes a simulator leave, turn by turn, as often as the "
        "real users of a `userlm prep` validation split; writes end_calibration.yaml for simulate, test, serve "
        "and chat (end_calibration=PATH).",
    )
    calibrate(config)
    return 0


def calibrate(config: CalibrateConfig) -> dict:
    """Read P(end) at the validation points, fit on one half, write the calibration file; return the report."""
    from userlm.hardware import resolve_bf16
    from userlm.infer.simulator import UserSimulator
    from userlm.summary import print_summary

    from .context import fit_to_context
    from .end_probability import end_scores
    from .scoring import teacher_forced
    from .subsets import draw_subsets, read_samples

    precision = resolve_bf16(config.bf16)
    print(f"userlm calibrate: P(end) read in {precision.describe()}", file=sys.stderr)
    rules = replace(config.eval_view(), bf16=precision.bf16)
    samples, bad_lines = read_samples(config.data)
    subsets = draw_subsets(samples, rules)
    spec = parse_checkpoint(f"simulator={config.simulator}")
    simulator = UserSimulator.load(spec.path, template=spec.template)
    subsets, over_context = fit_to_context(subsets, simulator, rules)
    points = subsets.end_points
    if len({p["conversation_id"] for p in points}) < 2:
        raise UserError(
            f"{config.data} has fewer than two conversations with a decision point within max_sample_chars "
            f"({config.max_sample_chars}); give a larger validation split or raise max_sample_chars."
        )
    with teacher_forced(simulator, rules):
        probabilities, _ = end_scores(simulator, points, batch_size=config.batch_size, progress=config.progress)
    half_of = halves([p["conversation_id"] for p in points], config.seed)
    records = [
        {
            "conversation_id": p["conversation_id"],
            "turn": min(p["turn_index"], TURNS),
            "is_end": bool(p["is_end"]),
            "p_end": probability,
            "half": half_of[p["conversation_id"]],
        }
        for p, probability in zip(points, probabilities)
    ]
    report = calibration_report(records, config.mode)
    report.update(
        {
            "simulator": config.simulator,
            "template": simulator.template.name,
            # Without the marker as one token there is no logit to bias: the other commands refuse the file.
            "steerable": simulator.end_token_id is not None,
            "data": str(config.data),
            "split": "validation",
            "seed": config.seed,
            "mode": config.mode,
            "buckets": f"turn t = 1..{TURNS - 1}: the points right after the user's t-th turn; "
            f"t = {TURNS}: every point from the {TURNS}th turn on",
            "counts": {
                "unusable_lines": len(bad_lines),
                "decision_points": len(points),
                "conversations": len(half_of),
                **{k: v for k, v in subsets.counts.items() if k.startswith(("decision_points", "conversations"))},
                "left_out_over_context": over_context.get("end_points", 0),
            },
            "p_end": "P(end as the first token of the turn), teacher-forced (evaluation/end_probability.py), "
            "the intent's scope sentence taken out",
        }
    )
    write_outputs(config, report, records)
    print_summary(calibration_summary(report, config))
    return report


def halves(conversations: list[str], seed: int) -> dict[str, str]:
    """conversation id -> "fit" or "held_out": a seeded shuffle of the distinct ids, cut in two."""
    distinct = sorted(set(conversations))
    random.Random(f"{seed}-halves").shuffle(distinct)
    cut = (len(distinct) + 1) // 2
    return {c: HALVES[0] if k < cut else HALVES[1] for k, c in enumerate(distinct)}


def logits(probabilities) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=float), EDGE, 1 - EDGE)
    return np.log(p) - np.log1p(-p)


def biased(probabilities, bias: float) -> np.ndarray:
    """P(end) after the end bias: sigmoid(logit(P) + bias)."""
    return 1 / (1 + np.exp(-(logits(probabilities) + bias)))


def rates(turns, values) -> dict[int, float]:
    """The mean of `values` (ends, P's or leave decisions) per turn bucket that holds points."""
    turns, values = np.asarray(turns), np.asarray(values, dtype=float)
    return {t: float(values[turns == t].mean()) for t in range(1, TURNS + 1) if (turns == t).any()}


def calibration_error(real: dict[int, float], simulated: dict[int, float]) -> float:
    """Mean absolute difference of the per-turn leave rates, over the buckets both hold."""
    return float(np.mean([abs(real[t] - simulated[t]) for t in real]))


def fit_bias(turns, probabilities, real_ends) -> float:
    """The end bias whose per-turn rates best match the real ones (least calibration error).

    Each turn's term |real − mean sigmoid(logit P + b)| falls then rises in b, but their mean need
    not have one minimum: a grid over every bias that moves some point's P between 1e-5 and
    1 − 1e-5, then a finer grid around the best, rather than a bracketing search (and scipy is no
    dependency)."""
    turns = np.asarray(turns)
    real = rates(turns, real_ends)
    z = logits(probabilities)
    masks = np.stack([turns == t for t in real])  # buckets x points
    targets = np.array(list(real.values()))

    def errors(grid: np.ndarray) -> np.ndarray:
        after = 1 / (1 + np.exp(-(z[None, :] + grid[:, None])))  # biases x points
        per_turn = after @ masks.T / masks.sum(axis=1)  # biases x buckets
        return np.abs(per_turn - targets).mean(axis=1)

    reach = math.log(1e5)
    grid = np.linspace(-z.max() - reach, -z.min() + reach, 2001)
    best = grid[np.argmin(errors(grid))]
    step = grid[1] - grid[0]
    fine = np.linspace(best - step, best + step, 201)
    return float(fine[np.argmin(errors(fine))])


def fit_threshold(turns, probabilities, real_ends) -> float:
    """The threshold on P(end) (leave iff P >= it) whose per-turn rates best match the real ones.

    The rates change only where the threshold passes a point's P, so every cut between two
    neighbouring P's is tried (midway in log-odds, so the held-out half is not cut at a fitted
    point's own value), and one below all of them."""
    turns = np.asarray(turns)
    real = rates(turns, real_ends)
    z = np.unique(logits(probabilities))
    cuts = np.concatenate([[z[0] - 1], (z[:-1] + z[1:]) / 2, [z[-1] + 1]])
    decided = np.asarray(logits(probabilities))[None, :] >= cuts[:, None]  # cuts x points
    masks = np.stack([turns == t for t in real])
    per_turn = decided.astype(float) @ masks.T / masks.sum(axis=1)
    errors = np.abs(per_turn - np.array(list(real.values()))).mean(axis=1)
    return float(1 / (1 + math.exp(-cuts[np.argmin(errors)])))


def calibration_report(records: list[dict], mode: str) -> dict:
    """The fit on the fit half and, for both halves, the per-turn table and the errors before and after."""
    fit = [r for r in records if r["half"] == HALVES[0]]

    def column(rows, key):
        return [r[key] for r in rows]

    if mode == "bias":
        bias = fit_bias(column(fit, "turn"), column(fit, "p_end"), column(fit, "is_end"))
        threshold = None

        def after(rows):
            return biased(column(rows, "p_end"), bias)

    else:
        bias, threshold = 0.0, fit_threshold(column(fit, "turn"), column(fit, "p_end"), column(fit, "is_end"))

        def after(rows):
            return np.asarray(column(rows, "p_end")) >= threshold

    table, errors = [], {}
    for half in HALVES:
        rows = [r for r in records if r["half"] == half]
        if not rows:
            continue
        turns = column(rows, "turn")
        real, before = rates(turns, column(rows, "is_end")), rates(turns, column(rows, "p_end"))
        now = rates(turns, after(rows))
        for t in real:
            table.append(
                {
                    "half": half,
                    "turn": t,
                    "real_rate": real[t],
                    "simulated_before": before[t],
                    "simulated_after": now[t],
                    "n": sum(1 for x in turns if x == t),
                    "conversations": len({r["conversation_id"] for r in rows}),
                }
            )
        errors[half] = {"before": calibration_error(real, before), "after": calibration_error(real, now)}
    return {BIAS_KEY: bias, THRESHOLD_KEY: threshold, "table": table, "calibration_error": errors}


def write_outputs(config: CalibrateConfig, report: dict, records: list[dict]) -> None:
    """The calibration file (its two keys first, then the report) and every point's P(end), each atomically."""
    from userlm.atomic import atomic_write, write_jsonl

    path = Path(config.calibration_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    head = {BIAS_KEY: report[BIAS_KEY], THRESHOLD_KEY: report[THRESHOLD_KEY]}
    rest = {k: v for k, v in report.items() if k not in head}
    atomic_write(
        path,
        f"# Written by `userlm calibrate`; give it to simulate, test, serve or chat as end_calibration={path}.\n"
        "# They read end_bias and end_threshold; the rest is the report.\n"
        + yaml.safe_dump(head, sort_keys=False)
        + yaml.safe_dump({"report": {**rest, "config": to_dict(config)}}, sort_keys=False, allow_unicode=True),
    )
    write_jsonl(Path(config.out) / "points.jsonl", records)
    atomic_write(Path(config.out) / "calibration.json", json.dumps(rest | head, indent=2) + "\n")


def calibration_summary(report: dict, config: CalibrateConfig):
    from userlm.summary import Summary

    def share(value: float) -> str:
        return f"{100 * value:.1f}%"

    rows = [
        (
            f"{row['half'].replace('_', '-')} t={row['turn']}{'+' if row['turn'] == TURNS else ''}",
            share(row["real_rate"]),
            share(row["simulated_before"]),
            share(row["simulated_after"]),
            row["n"],
        )
        for row in report["table"]
    ]
    errors = report["calibration_error"]
    rows += [
        (f"{half.replace('_', '-')} error", "", share(e["before"]), share(e["after"]), "") for half, e in errors.items()
    ]
    fitted = (
        f"end_bias {report[BIAS_KEY]:+.3f} (log-odds)"
        if report[THRESHOLD_KEY] is None
        else f"end_threshold {report[THRESHOLD_KEY]:.4g}"
    )
    notes = [
        f"Fitted on the fit half: {fitted}. Rates: the share of the points at each user-turn index whose user "
        f"leaves there (t={TURNS}+: every point from turn {TURNS} on); simulated from teacher-forced P(end). "
        "Error: the mean absolute difference over the turns; the held-out half's is the honest one."
    ]
    if not report["steerable"]:
        notes.append(
            "This simulator's tokenizer has no end marker token, so simulate, test, serve and chat refuse "
            "end steering for it: the figures are for comparison only."
        )
    return Summary(
        title=f"userlm calibrate: {config.simulator}",
        columns=("half, turn", "real", "before", "after", "n"),
        rows=rows,
        notes=notes,
        wrote={"calibration": config.calibration_file, "details": Path(config.out) / "calibration.json"},
    )

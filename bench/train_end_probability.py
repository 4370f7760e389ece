"""Has a checkpoint learnt to leave? P(<|endconversation|> as the first token of the user's turn)
at held-out decision points, one forward pass per point.

The points are those `userlm eval` scores: the decision points (samples whose prompt ends with
an assistant turn) whose prompt fits `max_sample_chars`, each test conversation cut there.
Two draws are scored: `userlm eval`'s own (`eval_conversations`, drawn with the seed as eval
draws `end_probability_conversations`), and a larger one (`conversations`), whose figure says
how much of the smaller draw's is luck. For each: the mean and median P(end) at end and
continue points, the ROC AUC of P(end) against the real ends, and the F1 that sampling would
get in expectation at temperature 1 and top-p 0.8, as `userlm eval` samples (P(end) after the
nucleus cut, 0 outside it). Then P(end) at the first turns of the same conversations, where no
real user leaves: a simulator that ends there writes nothing.

    python bench/train_end_probability.py checkpoint=out/quickstart/simulator data=out/quickstart/prep
    python bench/train_end_probability.py checkpoint=default@chatml data=out/quickstart/prep   # the prompted base
    python bench/train_end_probability.py recipe=smollm2-cpu-quickstart data=out/quickstart/prep   # at step 0
    python bench/train_end_probability.py recipe=smollm2-cpu-quickstart 'overrides=[end_marker_init=mean]' ...

`recipe` scores the model a recipe would start training from (after the end marker's rows
are initialised, before any step); `checkpoint` scores what `userlm eval` would load.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config, parse_config
from userlm.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(kw_only=True)
class EndProbabilityConfig(Config):
    data: Path = field(metadata={"help": "a `userlm prep` output folder (its test split is scored)"})
    checkpoint: str | None = field(default=None, metadata={"help": "what `userlm eval` takes: PATH or PATH@TEMPLATE"})
    recipe: str | None = field(default=None, metadata={"help": "score the step-0 model of this recipe instead"})
    overrides: list[str] = field(default_factory=list, metadata={"help": "key=value words for the recipe"})
    max_sample_chars: int = field(default=1200, metadata={"min": 1, "help": "as `userlm eval`'s key"})
    eval_conversations: int = field(
        default=20, metadata={"min": 1, "help": "`userlm eval`'s end_probability_conversations"}
    )
    conversations: int = field(default=200, metadata={"min": 1, "help": "conversations of the larger draw"})
    seed: int = field(default=0, metadata={"min": 0})
    top_p: float = field(default=0.8, metadata={"above": 0, "max": 1})
    batch_size: int = field(default=8, metadata={"min": 1})

    def validate(self) -> None:
        if (self.checkpoint is None) == (self.recipe is None):
            raise UserError("Give either checkpoint=PATH[@TEMPLATE] or recipe=NAME.")


def draws(config: EndProbabilityConfig) -> tuple[list[dict], set[str], set[str]]:
    """The decision points of both draws, and the conversation ids of each (eval's, then the larger)."""
    from userlm.evaluation.subsets import decision_points, prompt_chars, read_samples
    from userlm.flipped.samples import split_file

    samples, _ = read_samples(split_file(config.data, "test"))
    # As evaluation/subsets.py keeps them: the points whose prompt fits (each conversation cut there).
    points = [p for p in decision_points(samples) if prompt_chars(p) <= config.max_sample_chars]
    eligible = sorted({p["conversation_id"] for p in points})
    # Drawn as evaluation/subsets.py draws end_probability_conversations.
    eval_draw = set(random.Random(f"{config.seed}-end").sample(eligible, min(config.eval_conversations, len(eligible))))
    large = set(random.Random(f"bench-{config.seed}").sample(eligible, min(config.conversations, len(eligible))))
    chosen = eval_draw | large
    # First turns too: no real user leaves before writing, so P(end) there should be near 0.
    first_turns = [s for s in samples if s["conversation_id"] in chosen and s["prompt"][-1]["role"] == "system"]
    return [p for p in points if p["conversation_id"] in chosen] + first_turns, eval_draw, large


def no_model_reference(config: EndProbabilityConfig, points: list[dict]) -> str:
    """ROC AUC at `points` of the train split's end rate by user turn, the floor `userlm eval` reports."""
    from userlm.evaluation.end_reference import end_reference
    from userlm.flipped.samples import split_file

    reference = end_reference(split_file(config.data, "test"), points).get("termination_auc", {}).get("turn_index")
    return (
        "n/a (no train split, or one kind of point only)"
        if not reference or reference["value"] is None
        else f"{reference['value']:.3f}"
    )


def end_probabilities(model, tokenizer, template, points: list[dict], config: EndProbabilityConfig):
    """(P(end), the probability that sampling at temperature 1 and top-p ends) at
    each point, as `userlm eval` scores them."""
    from types import SimpleNamespace

    from userlm.evaluation.end_probability import end_scores

    model.eval()
    return end_scores(
        SimpleNamespace(model=model, tokenizer=tokenizer, template=template),
        points,
        top_p=config.top_p,
        batch_size=config.batch_size,
        progress=False,
    )


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    from userlm.evaluation.roc import roc_auc as auc

    return auc(scores, labels)


def expected_f1(sampled: list[float], labels: list[bool]) -> float:
    """F1 of ending when each point ends with its sampling probability, from expected counts (as `userlm eval`)."""
    from userlm.evaluation.end_probability import expected_f1 as f1

    return f1(sampled, labels)["value"] / 100


def load(config: EndProbabilityConfig):
    """(model, tokenizer, template) of a checkpoint as `userlm eval` loads it, or of a recipe's starting point."""
    if config.checkpoint:
        from userlm.infer.simulator import UserSimulator

        path, _, template = config.checkpoint.partition("@")
        simulator = UserSimulator.load(path, template=template or None)
        return simulator.model, simulator.tokenizer, simulator.template
    from userlm.flipped.templates import get_template
    from userlm.train.config import load_recipe
    from userlm.train.sft import build_trainer

    recipe = load_recipe(
        config.recipe,
        [
            *config.overrides,
            f"dataset_path={config.data}",
            f"output_dir={tempfile.mkdtemp(prefix='end-probability-step0-')}",
            "max_train_samples=8",
            "max_eval_samples=1",
        ],
    )
    run = build_trainer(recipe)
    return run.trainer.model, run.tokenizer, get_template(recipe.template)


def report(name: str, scored: list[tuple[float, float, bool]]) -> str:
    raw = [r for r, _, _ in scored]
    sampled = [s for _, s, _ in scored]
    labels = [y for _, _, y in scored]
    at_end = [r for r, y in zip(raw, labels) if y]
    at_continue = [r for r, y in zip(raw, labels) if not y]
    if not at_end or not at_continue:
        return f"  {name}: {len(labels)} points, {len(at_end)} ends: no ROC AUC without both kinds of point"
    return (
        f"  {name}: {len(labels)} points, {len(at_end)} ends; P(end) at ends mean {statistics.mean(at_end):.3g} "
        f"median {statistics.median(at_end):.3g}, at continues mean {statistics.mean(at_continue):.3g} "
        f"median {statistics.median(at_continue):.3g}; ROC AUC {roc_auc(raw, labels):.3f}; "
        f"expected sampled F1 {100 * expected_f1(sampled, labels):.1f}"
    )


def main(words: list[str]) -> int:
    config = parse_config(EndProbabilityConfig, words, prog="bench/train_end_probability.py", description=__doc__)
    points, eval_draw, large = draws(config)
    model, tokenizer, template = load(config)
    raw, nucleus = end_probabilities(model, tokenizer, template, points, config)
    scored = [(r, s, bool(p["is_end"]), p["conversation_id"]) for r, s, p in zip(raw, nucleus, points)]
    print(
        f"{config.checkpoint or config.recipe + ' ' + ' '.join(config.overrides) + ' (step 0)'} on {config.data} test:"
    )
    first = [r for (r, _, _, _), p in zip(scored, points) if p["prompt"][-1]["role"] == "system"]
    scored = [row for row, p in zip(scored, points) if p["prompt"][-1]["role"] != "system"]
    for name, chosen in (
        (f"eval's draw ({len(eval_draw)} conversations)", eval_draw),
        (f"{len(large)} conversations", large),
    ):
        print(report(name, [(r, s, y) for r, s, y, c in scored if c in chosen]))
    print(
        f"  first turns of both draws: {len(first)}; P(end) mean "
        f"{statistics.mean(first):.3g}, median {statistics.median(first):.3g}"
    )
    decisions = [p for p in points if p["prompt"][-1]["role"] != "system" and p["conversation_id"] in large]
    print(
        f"  reference, no model: the train split's end rate by user turn ranks the {len(large)} "
        f"conversations' points at ROC AUC {no_model_reference(config, decisions)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

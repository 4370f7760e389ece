"""Does a recipe learn *when* users leave if it trains longer? P(end) at held-out decision points,
scored during one training run at the steps asked for.

One `userlm train` run of the recipe (its own keys, `max_steps` = the last step asked for,
no checkpoints saved); at step 0 and at each step asked for, the model in training scores
the held-out points `bench/train_end_probability.py` scores (its larger draw, one forward
pass per point): mean P(end) at ends and at continues, the ROC AUC, the expected sampled F1
(temperature 1, top-p 0.8, as `userlm eval` samples), and mean P(end) at first turns, where
no one leaves. The learning-rate schedule is the recipe's over the whole run, so step 20 of a
200-step run is not the 20-step recipe; compare runs of the same length.

    python bench/end_curve.py data=out/quickstart/prep 'steps=[20,60]'
    # on a GPU, with the quickstart's prep folder copied there:
    python bench/end_curve.py data=prep 'steps=[20,100,300,1000]' \\
        'overrides=[use_cpu=false,max_train_samples=null,per_device_train_batch_size=16,gradient_accumulation_steps=1]'
"""

from __future__ import annotations

import os
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
class EndCurveConfig(Config):
    data: Path = field(metadata={"help": "a `userlm prep` output folder (trained on train, scored on test)"})
    steps: list[int] = field(metadata={"help": "the steps to score at, e.g. [20,60,200]; the run trains to the last"})
    recipe: str = field(default="smollm2-cpu-quickstart", metadata={"help": "a shipped recipe's name or a YAML path"})
    overrides: list[str] = field(default_factory=list, metadata={"help": "key=value words for the recipe"})
    conversations: int = field(default=200, metadata={"min": 1, "help": "held-out conversations scored"})
    seed: int = field(default=0, metadata={"min": 0})
    batch_size: int = field(default=8, metadata={"min": 1})

    def validate(self) -> None:
        if not self.steps or min(self.steps) < 1:
            raise UserError("Give steps as a list of positive step numbers, e.g. 'steps=[20,60]'.")


def row(step: int, points: list[dict], raw: list[float], sampled: list[float]) -> str:
    from userlm.evaluation.end_probability import expected_f1
    from userlm.evaluation.roc import roc_auc

    decisions = [i for i, p in enumerate(points) if p["prompt"][-1]["role"] != "system"]
    ends = [bool(points[i]["is_end"]) for i in decisions]
    at_ends = statistics.fmean(raw[i] for i, end in zip(decisions, ends) if end)
    at_continues = statistics.fmean(raw[i] for i, end in zip(decisions, ends) if not end)
    first = statistics.fmean(raw[i] for i, p in enumerate(points) if p["prompt"][-1]["role"] == "system")
    auc = roc_auc([raw[i] for i in decisions], ends)
    f1 = expected_f1([sampled[i] for i in decisions], ends)["value"]
    return f"| {step} | {at_ends:.3g} | {at_continues:.3g} | {auc:.3f} | {f1:.1f} | {first:.3g} |"


def main(words: list[str]) -> int:
    from train_end_probability import EndProbabilityConfig, draws, end_probabilities, no_model_reference
    from transformers import TrainerCallback

    from userlm.flipped.templates import get_template
    from userlm.train.config import load_recipe
    from userlm.train.sft import build_trainer

    config = parse_config(EndCurveConfig, words, prog="bench/end_curve.py", description=__doc__)
    scoring = EndProbabilityConfig(
        data=config.data,
        recipe=config.recipe,
        conversations=config.conversations,
        seed=config.seed,
        batch_size=config.batch_size,
    )
    points, _, large = draws(scoring)
    points = [p for p in points if p["conversation_id"] in large]
    steps = sorted(set(config.steps))
    table = []

    def score(run, step: int) -> None:
        """P(end) as train_end_probability scores it (top-p 0.8), from the model in training, which then trains on."""
        model = run.trainer.model
        training = model.training
        scored = end_probabilities(model, run.tokenizer, get_template(run.config.template), points, scoring)
        model.train(training)
        table.append(row(step, points, *scored))
        print(table[-1], flush=True)

    class ScoreAtSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in steps:
                score(run, state.global_step)

    with tempfile.TemporaryDirectory(prefix="end-curve-") as output_dir:  # nothing is saved there
        recipe = load_recipe(
            config.recipe,
            [
                *config.overrides,
                f"dataset_path={config.data}",
                f"output_dir={output_dir}",
                f"max_steps={steps[-1]}",
                "save_strategy=no",
                "eval_on_start=false",
                "eval_strategy=no",
                "resume_from_checkpoint=null",
            ],
        )
        run = build_trainer(recipe)
        score(run, 0)
        run.trainer.add_callback(ScoreAtSteps())
        run.trainer.train()
    decisions = [p for p in points if p["prompt"][-1]["role"] != "system"]
    print(
        f"\n{config.recipe} {' '.join(config.overrides)} on {config.data}: {len(decisions)} held-out decision points "
        f"({sum(bool(p['is_end']) for p in decisions)} ends) of {len(large)} conversations, "
        f"{len(points) - len(decisions)} first turns"
    )
    print(
        f"Reference, no model: the train split's end rate by user turn ranks these points at ROC AUC "
        f"{no_model_reference(scoring, decisions)}"
    )
    print("| step | P(end) at ends | at continues | ROC AUC | expected F1 | P(end) at first turns |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

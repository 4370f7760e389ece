"""Has a checkpoint learnt to leave? P(<|endconversation|> as the first token of the user's turn)
at held-out decision points, one forward pass per point.

A decision point is a held-out sample whose prompt ends with an assistant turn: the real
user then either left (an end point) or went on (a continue point). The script scores the
first `points` end points and the first `points` continue points of a prep split, each
prompt fitted to `max_length` the way training fits it (oldest exchanges dropped, the
system message kept), and prints, for end and continue points, the mean and median
P(end) and the median rank of the end marker; the ROC AUC of P(end) against the real
ends; and the F1 of ending that sampling at P(end) would get in expectation at the split's
real share of end points (top-p and guardrails left aside).

    python bench/train_end_probability.py checkpoint=out/quickstart/simulator data=out/quickstart/prep
    python bench/train_end_probability.py recipe=smollm2-cpu-quickstart data=out/quickstart/prep   # at step 0
    python bench/train_end_probability.py recipe=smollm2-cpu-quickstart 'overrides=[end_marker_init=mean]' ...

`recipe` scores the model a recipe would start training from (after the end marker's rows
are initialised, before any step); `checkpoint` scores a `userlm train` output folder.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config, parse_config
from userlm.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(kw_only=True)
class EndProbabilityConfig(Config):
    data: Path = field(metadata={"help": "a `userlm prep` output folder"})
    checkpoint: str | None = field(default=None, metadata={"help": "a `userlm train` output folder"})
    recipe: str | None = field(default=None, metadata={"help": "score the step-0 model of this recipe instead"})
    overrides: list[str] = field(default_factory=list, metadata={"help": "key=value words for the recipe"})
    split: str = field(default="validation", metadata={"help": "the split whose decision points are scored"})
    points: int = field(default=80, metadata={"min": 1, "help": "end points and continue points scored, each"})
    max_length: int = field(default=256, metadata={"min": 16, "help": "prompt tokens kept, as training fits them"})
    batch_size: int = field(default=8, metadata={"min": 1})

    def validate(self) -> None:
        if (self.checkpoint is None) == (self.recipe is None):
            raise UserError("Give either checkpoint=FOLDER or recipe=NAME.")


def decision_points(path: Path, split: str, per_kind: int) -> tuple[list[dict], float]:
    """The first `per_kind` end and continue points of the split, and the split's share of end points."""
    import json

    from userlm.data_prep.samples import open_lines, split_file

    chosen = {True: [], False: []}
    counts = {True: 0, False: 0}
    for _, line in open_lines(split_file(path, split)):
        sample = json.loads(line)
        if sample["prompt"][-1]["role"] != "assistant":
            continue
        counts[bool(sample["is_end"])] += 1
        if len(chosen[bool(sample["is_end"])]) < per_kind:
            chosen[bool(sample["is_end"])].append(sample)
    return chosen[True] + chosen[False], counts[True] / max(1, counts[True] + counts[False])


def prompt_ids(tokenizer, template, sample: dict, max_length: int) -> list[int]:
    from userlm.train.truncation import fit_sample

    from userlm.data_prep.format import END_MARKER

    # Only the prompt is scored: a one-token target fits it as a leaving turn would be fitted.
    fitted = fit_sample(tokenizer, template, {**sample, "completion": [{"role": "user", "content": END_MARKER}]}, max_length)
    return [t for t, m in zip(fitted.input_ids, fitted.completion_mask) if not m]


def end_probabilities(model, tokenizer, template, points: list[dict], config: EndProbabilityConfig) -> tuple[list[float], list[int]]:
    import torch

    from userlm.data_prep.format import END_MARKER

    end = tokenizer.convert_tokens_to_ids(END_MARKER)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    probabilities, ranks = [], []
    model.eval()
    for start in range(0, len(points), config.batch_size):
        batch = [prompt_ids(tokenizer, template, p, config.max_length) for p in points[start:start + config.batch_size]]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch])
        mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
        p = logits.softmax(-1)
        probabilities += p[:, end].tolist()
        ranks += (p > p[:, end:end + 1]).sum(-1).add(1).tolist()
    return probabilities, ranks


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """P(a random end point scores above a random continue point), ties counting half."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def expected_f1(end_p: list[float], continue_p: list[float], end_share: float) -> float:
    """F1 of ending when each point ends with its P(end), at the real share of end points."""
    tp = end_share * statistics.mean(end_p)
    fp = (1 - end_share) * statistics.mean(continue_p)
    fn = end_share - tp
    return 2 * tp / (2 * tp + fp + fn)


def load(config: EndProbabilityConfig):
    """(model, tokenizer, template) of a checkpoint, or of a recipe's starting point."""
    if config.checkpoint:
        from userlm.data_prep.templates import template_of
        from userlm.infer.loading import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(config.checkpoint)
        return model, tokenizer, template_of(tokenizer)
    from userlm.data_prep.templates import get_template
    from userlm.train.config import load_recipe
    from userlm.train.sft import build_trainer

    recipe = load_recipe(config.recipe, [*config.overrides, f"dataset_path={config.data}",
                                          "output_dir=/tmp/end-probability-step0", "max_train_samples=8", "max_eval_samples=1"])
    run = build_trainer(recipe)
    return run.trainer.model, run.tokenizer, get_template(recipe.template)


def main(words: list[str]) -> int:
    config = parse_config(EndProbabilityConfig, words, prog="bench/train_end_probability.py", description=__doc__)
    points, end_share = decision_points(config.data, config.split, config.points)
    model, tokenizer, template = load(config)
    probabilities, ranks = end_probabilities(model, tokenizer, template, points, config)
    labels = [bool(p["is_end"]) for p in points]
    end_p = [p for p, y in zip(probabilities, labels) if y]
    continue_p = [p for p, y in zip(probabilities, labels) if not y]
    end_r = [r for r, y in zip(ranks, labels) if y]
    continue_r = [r for r, y in zip(ranks, labels) if not y]
    print(f"{config.checkpoint or config.recipe + ' ' + ' '.join(config.overrides) + ' (step 0)'}: "
          f"{len(end_p)} end and {len(continue_p)} continue points of {config.data}/{config.split}")
    print(f"  P(end) at end points:      mean {statistics.mean(end_p):.3g}, median {statistics.median(end_p):.3g}, "
          f"median rank {statistics.median(end_r):.0f}")
    print(f"  P(end) at continue points: mean {statistics.mean(continue_p):.3g}, median {statistics.median(continue_p):.3g}, "
          f"median rank {statistics.median(continue_r):.0f}")
    print(f"  ROC AUC {roc_auc(probabilities, labels):.3f}; expected sampled F1 at the real end share "
          f"({end_share:.1%}) {100 * expected_f1(end_p, continue_p, end_share):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

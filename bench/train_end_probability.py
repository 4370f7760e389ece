"""Has a checkpoint learnt to leave? P(<|endconversation|> as the first token of the user's turn)
at held-out decision points, one forward pass per point.

The points are those `userlm eval` scores: every decision point (a sample whose prompt ends
with an assistant turn) of test conversations whose longest point fits `max_sample_chars`.
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
    eval_conversations: int = field(default=20, metadata={"min": 1, "help": "`userlm eval`'s end_probability_conversations"})
    conversations: int = field(default=200, metadata={"min": 1, "help": "conversations of the larger draw"})
    seed: int = field(default=0, metadata={"min": 0})
    top_p: float = field(default=0.8, metadata={"above": 0, "max": 1})
    batch_size: int = field(default=8, metadata={"min": 1})

    def validate(self) -> None:
        if (self.checkpoint is None) == (self.recipe is None):
            raise UserError("Give either checkpoint=PATH[@TEMPLATE] or recipe=NAME.")


def draws(config: EndProbabilityConfig) -> tuple[list[dict], set[str], set[str]]:
    """The decision points of both draws, and the conversation ids of each (eval's, then the larger)."""
    from userlm.data_prep.samples import split_file
    from userlm.evaluation.subsets import decision_points, read_samples, sample_chars

    samples, _ = read_samples(split_file(config.data, "test"))
    points = decision_points(samples)
    longest: dict[str, int] = {}
    for p in points:
        longest[p["conversation_id"]] = max(longest.get(p["conversation_id"], 0), sample_chars(p))
    eligible = sorted(c for c, n in longest.items() if n <= config.max_sample_chars)
    # Drawn as evaluation/subsets.py draws end_probability_conversations.
    eval_draw = set(random.Random(f"{config.seed}-end").sample(eligible, min(config.eval_conversations, len(eligible))))
    large = set(random.Random(f"bench-{config.seed}").sample(eligible, min(config.conversations, len(eligible))))
    chosen = eval_draw | large
    # First turns too: no real user leaves before writing, so P(end) there should be near 0.
    first_turns = [s for s in samples if s["conversation_id"] in chosen and s["prompt"][-1]["role"] == "system"]
    return [p for p in points if p["conversation_id"] in chosen] + first_turns, eval_draw, large


def end_probabilities(model, tokenizer, template, points: list[dict], config: EndProbabilityConfig):
    """(P(end), P(end) after the top-p cut) at each point: the end marker as the next token after the prompt."""
    import torch

    from userlm.data_prep.format import END_MARKER
    from userlm.data_prep.templates import render

    end = tokenizer.convert_tokens_to_ids(END_MARKER)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    raw, nucleus = [], []
    model.eval()
    for start in range(0, len(points), config.batch_size):
        batch = [tokenizer(render(tokenizer, template, p["prompt"]), add_special_tokens=False)["input_ids"]
                 for p in points[start:start + config.batch_size]]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch])
        mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch])
        with torch.no_grad():
            probs = model(input_ids=ids, attention_mask=mask).logits[:, -1].float().softmax(-1)
        for row in probs:
            p_end = row[end].item()
            # As infer/sampling.py cuts: the smallest prefix of the sorted tokens whose mass reaches top_p.
            ordered = row.sort(descending=True).values
            kept_mass = ordered[(ordered.cumsum(0) - ordered) < config.top_p].sum().item()
            above = row[row > p_end].sum().item()  # end is in the nucleus while the likelier tokens hold less than top_p
            raw.append(p_end)
            nucleus.append(p_end / kept_mass if above < config.top_p else 0.0)
    return raw, nucleus


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    from userlm.evaluation.roc import roc_auc as auc

    return auc(scores, labels)


def expected_f1(sampled: list[float], labels: list[bool]) -> float:
    """F1 of ending when each point ends with its sampling probability, in expectation."""
    tp = sum(p for p, y in zip(sampled, labels) if y)
    fp = sum(p for p, y in zip(sampled, labels) if not y)
    fn = sum(1 - p for p, y in zip(sampled, labels) if y)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def load(config: EndProbabilityConfig):
    """(model, tokenizer, template) of a checkpoint as `userlm eval` loads it, or of a recipe's starting point."""
    if config.checkpoint:
        from userlm.infer.simulator import UserSimulator

        path, _, template = config.checkpoint.partition("@")
        simulator = UserSimulator.load(path, template=template or None)
        return simulator.model, simulator.tokenizer, simulator.template
    from userlm.data_prep.templates import get_template
    from userlm.train.config import load_recipe
    from userlm.train.sft import build_trainer

    recipe = load_recipe(config.recipe, [*config.overrides, f"dataset_path={config.data}",
                                          f"output_dir={tempfile.mkdtemp(prefix='end-probability-step0-')}", "max_train_samples=8", "max_eval_samples=1"])
    run = build_trainer(recipe)
    return run.trainer.model, run.tokenizer, get_template(recipe.template)


def report(name: str, scored: list[tuple[float, float, bool]]) -> str:
    raw = [r for r, _, _ in scored]
    sampled = [s for _, s, _ in scored]
    labels = [y for _, _, y in scored]
    at_end = [r for r, y in zip(raw, labels) if y]
    at_continue = [r for r, y in zip(raw, labels) if not y]
    return (f"  {name}: {len(labels)} points, {len(at_end)} ends; P(end) at ends mean {statistics.mean(at_end):.3g} "
            f"median {statistics.median(at_end):.3g}, at continues mean {statistics.mean(at_continue):.3g} "
            f"median {statistics.median(at_continue):.3g}; ROC AUC {roc_auc(raw, labels):.3f}; "
            f"expected sampled F1 {100 * expected_f1(sampled, labels):.1f}")


def main(words: list[str]) -> int:
    config = parse_config(EndProbabilityConfig, words, prog="bench/train_end_probability.py", description=__doc__)
    points, eval_draw, large = draws(config)
    model, tokenizer, template = load(config)
    raw, nucleus = end_probabilities(model, tokenizer, template, points, config)
    scored = [(r, s, bool(p["is_end"]), p["conversation_id"]) for r, s, p in zip(raw, nucleus, points)]
    print(f"{config.checkpoint or config.recipe + ' ' + ' '.join(config.overrides) + ' (step 0)'} on {config.data} test:")
    first = [r for (r, _, _, _), p in zip(scored, points) if p["prompt"][-1]["role"] == "system"]
    scored = [row for row, p in zip(scored, points) if p["prompt"][-1]["role"] != "system"]
    for name, chosen in ((f"eval's draw ({len(eval_draw)} conversations)", eval_draw), (f"{len(large)} conversations", large)):
        print(report(name, [(r, s, y) for r, s, y, c in scored if c in chosen]))
    print(f"  first turns of both draws: {len(first)}; P(end) mean {statistics.mean(first):.3g}, median {statistics.median(first):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

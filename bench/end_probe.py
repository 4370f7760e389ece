"""Where in a checkpoint is *when* the user leaves? Linear probes on each layer's hidden state
at the decision points (the position that reads the open user turn, whose next token is the
end marker or the turn's first word).

Probes are fitted on the first `train_samples` of the prep folder's train split (the samples
a recipe with that `max_train_samples` trains on, cut to `max_length` as training cuts them)
and scored on the held-out points `bench/train_end_probability.py` scores (its larger draw).
Two probes per layer, each an L2 logistic regression on standardised features, classes
balanced:
- end: does the user leave here? Its ROC AUC on the held-out ends;
- scope: does the intent say "A single answer is all you are after." (the heuristic scope,
  data_prep/intents.py `SCOPES`)? Its ROC AUC on that label, and on the ends (at the held-out
  points most ends are that scope at turn 1).
A probe that ranks well at a middle layer and badly at the last says the model reads the
information and its last layers, the ones that give P(end), do not carry it to the output.

    python bench/end_probe.py checkpoint=out/quickstart/simulator data=out/quickstart/prep
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config, parse_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(kw_only=True)
class EndProbeConfig(Config):
    checkpoint: str = field(metadata={"help": "what `userlm eval` takes: PATH or PATH@TEMPLATE"})
    data: Path = field(metadata={"help": "a `userlm prep` output folder (probes fit on train, scored on test)"})
    train_samples: int = field(
        default=600, metadata={"min": 1, "help": "the first N train samples give the probes' points"}
    )
    max_length: int = field(default=256, metadata={"min": 8, "help": "train points cut as training cuts them"})
    conversations: int = field(
        default=200, metadata={"min": 1, "help": "held-out conversations (train_end_probability's larger draw)"}
    )
    l2: float = field(default=0.01, metadata={"min": 0, "help": "L2 weight of the probes"})
    layer_step: int = field(default=3, metadata={"min": 1, "help": "probe every Nth layer (the last always)"})
    batch_size: int = field(default=8, metadata={"min": 1})


def hidden_states(model, rows: list[list[int]], batch_size: int):
    """(points, layers + 1, hidden) float32: every layer's state at each row's last token."""
    import torch
    from tqdm.auto import tqdm

    states = []
    with torch.no_grad():
        for start in tqdm(range(0, len(rows), batch_size), desc="hidden states", unit="batch"):
            batch = rows[start : start + batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([r + [0] * (width - len(r)) for r in batch])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
            layers = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            states += [torch.stack([layer[i, len(r) - 1].float() for layer in layers]) for i, r in enumerate(batch)]
    return torch.stack(states)


def probe(features, labels: list[bool], l2: float):
    """An L2 logistic regression with balanced classes on standardised features; returns its scoring function."""
    import torch

    from userlm.evaluation.logistic import fit_balanced_logistic

    y = torch.tensor(labels, dtype=torch.float32)
    mean, scale = features.mean(0), features.std(0) + 1e-3
    # `l2` is weighed against the positive-weighted mean loss, 2 x (negatives / points) times the balanced one.
    weight, _ = fit_balanced_logistic(
        (features - mean) / scale, y, l2 * len(y) / (2 * (len(y) - y.sum())), max_iter=500
    )
    return lambda held_out: (((held_out - mean) / scale) @ weight).tolist()


def main(words: list[str]) -> int:
    from train_end_probability import EndProbabilityConfig, draws, load

    from userlm.evaluation.roc import roc_auc
    from userlm.flipped.samples import load_samples
    from userlm.flipped.scope import SCOPES
    from userlm.flipped.templates import render
    from userlm.train.truncation import fit_sample

    config = parse_config(EndProbeConfig, words, prog="bench/end_probe.py", description=__doc__)
    scoring = EndProbabilityConfig(data=config.data, checkpoint=config.checkpoint, conversations=config.conversations)
    points, _, large = draws(scoring)
    held_out = [p for p in points if p["conversation_id"] in large and p["prompt"][-1]["role"] != "system"]
    model, tokenizer, template = load(scoring)
    model.eval()

    train_rows, train_points = [], []
    train = load_samples(config.data)["train"]
    for sample in train.select(range(min(config.train_samples, len(train)))):
        if sample["prompt"][-1]["role"] == "system":
            continue  # a first turn: no decision to leave
        fitted = fit_sample(tokenizer, template, sample, config.max_length)
        if fitted is not None:
            train_rows.append(fitted.input_ids[: fitted.completion_mask.index(1)])
            train_points.append(sample)
    test_rows = [
        tokenizer(render(tokenizer, template, p["prompt"]), add_special_tokens=False)["input_ids"] for p in held_out
    ]
    train_states = hidden_states(model, train_rows, config.batch_size)
    test_states = hidden_states(model, test_rows, config.batch_size)

    def single_answer(point: dict) -> bool:
        return SCOPES[0] in point["prompt"][0]["content"]

    ends = [bool(p["is_end"]) for p in train_points]
    scopes = [single_answer(p) for p in train_points]
    held_ends = [bool(p["is_end"]) for p in held_out]
    held_scopes = [single_answer(p) for p in held_out]
    print(
        f"{config.checkpoint}: probes fit on {len(train_points)} train decision points ({sum(ends)} ends, "
        f"{sum(scopes)} single-answer), scored on {len(held_out)} held-out points ({sum(held_ends)} ends, "
        f"{sum(held_scopes)} single-answer); L2 {config.l2}"
    )
    print("| layer | end probe: AUC on ends | scope probe: AUC on scope | scope probe: AUC on ends |")
    print("|---:|---:|---:|---:|")
    last = train_states.shape[1] - 1
    for layer in sorted({*range(config.layer_step, last, config.layer_step), last}):
        end_scores = probe(train_states[:, layer], ends, config.l2)(test_states[:, layer])
        scope_scores = probe(train_states[:, layer], scopes, config.l2)(test_states[:, layer]) if any(scopes) else None
        scope_cells = (
            ("n/a", "n/a")
            if scope_scores is None
            else (f"{roc_auc(scope_scores, held_scopes):.3f}", f"{roc_auc(scope_scores, held_ends):.3f}")
        )
        print(
            f"| {layer}{' (last)' if layer == last else ''} | "
            f"{roc_auc(end_scores, held_ends):.3f} | {scope_cells[0]} | {scope_cells[1]} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

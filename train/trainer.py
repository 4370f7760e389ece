"""TRL's SFTTrainer with two changes: the token rows LoRA trains get their own learning rate,
and on an eager CPU run the fused LM head scores only the labelled positions.

Under LoRA a new token's embedding and output rows are PEFT `trainable_token_indices`
(train/vocab.py): a few `trainable_tokens_delta` parameters. Trained at a LoRA learning
rate, the end marker's rows barely move in a short run (a 135M model given 25 steps never
learnt to emit it), so `new_token_learning_rate` puts them in an optimizer group of their
own. The trainer's own `create_optimizer` still builds the optimizer (whatever `optim` the
recipe picks, its weight-decay groups, its kwargs); the rows are then moved from its
groups into one more group before any step, and the scheduler created afterwards scales
every group's rate by the same schedule.
"""

from __future__ import annotations

import contextlib

import trl.trainer.utils as trl_utils
from trl import SFTTrainer

TOKEN_ROWS = "trainable_tokens_delta"


class SimulatorTrainer(SFTTrainer):
    def __init__(self, *args, new_token_learning_rate: float | None = None, **kwargs):
        self.new_token_learning_rate = new_token_learning_rate
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        creating = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if creating and self.new_token_learning_rate is not None:
            model = self.model if model is None else model
            rows = {id(p) for name, p in model.named_parameters() if TOKEN_ROWS in name and p.requires_grad}
            if rows:
                moved = []
                for group in optimizer.param_groups:
                    moved += [p for p in group["params"] if id(p) in rows]
                    group["params"] = [p for p in group["params"] if id(p) not in rows]
                # No weight decay: these rows are whole embeddings, not updates around zero.
                optimizer.add_param_group({"params": moved, "lr": self.new_token_learning_rate, "weight_decay": 0.0})
        return optimizer

    def compute_loss(self, model, inputs, *args, **kwargs):
        eager_cpu = self.accelerator.device.type == "cpu" and not self.args.torch_compile
        with labelled_positions_only() if eager_cpu else contextlib.nullcontext():
            return super().compute_loss(model, inputs, *args, **kwargs)


@contextlib.contextmanager
def labelled_positions_only():
    """Make TRL's fused LM head project only the positions that have a label, as it does on GPUs.

    Off Triton devices TRL 1.16 projects every position onto the vocabulary, to keep tile
    shapes fixed for compilers. A flipped sample is mostly prompt (about 6% of the
    quickstart's positions have a label), so on an eager CPU run that is wasted work: the
    head took 3.0 s of a 7.0 s step in a profile. Same loss and gradients; a step of the CPU
    quickstart recipe 1.5 to 1.7 times faster here (bench/train_step.py: 7.7 s a micro-batch
    of 4 x 256 tokens, then 4.5 to 5.1). TRL has no setting for it, hence the swap of its
    private switch, skipped if a TRL release renames it.
    """
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original

"""TRL's SFTTrainer with one change: the token rows LoRA trains get their own learning rate.

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

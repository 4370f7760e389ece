"""The quickstart's training step: the SmolLM2 LoRA on the prepared ShareGPT data.

It runs the shipped CPU recipe, pointed at the quickstart's folders, and reports the
held-out user-turn loss before and after (the recipe sets `eval_on_start`).
"""

from __future__ import annotations

from pathlib import Path

from userlm.errors import UserError

from .config import load_recipe
from .sft import train

QUICKSTART_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "smollm2-cpu-quickstart.yaml"


def quickstart_train(prep_out: Path, out_dir: Path, overrides: list[str] = ()) -> dict:
    """Train the quickstart LoRA on `prep_out` (what `userlm prep` wrote) into `out_dir`; returns the run summary.

    The summary's `eval_loss_before` and `eval_loss_after` are the mean loss on held-out
    user turns (the validation split) of the base model and of the trained adapter.
    """
    if not QUICKSTART_RECIPE.is_file():
        raise UserError(f"The quickstart recipe {QUICKSTART_RECIPE} is missing; run the quickstart from a checkout of userlm-kit.")
    recipe = load_recipe(QUICKSTART_RECIPE, [f"dataset_path={prep_out}", f"output_dir={out_dir}", *overrides])
    summary = train(recipe)
    before, after = (summary[key] for key in ("eval_loss_before", "eval_loss_after"))
    print(
        f"Held-out user-turn loss of the SmolLM2 simulator: {_loss(before)} before training, "
        f"{_loss(after)} after {summary['global_step']} steps ({out_dir})."
    )
    return summary


def _loss(value: float | None) -> str:
    # None when an override turned eval_on_start or evaluation off.
    return "not measured" if value is None else f"{value:.3f}"

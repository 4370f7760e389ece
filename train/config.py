"""The training recipe: one YAML file, validated, with `key=value` overrides (DESIGN.md 5).

A recipe's keys are TRL `SFTConfig` fields (kept under their own names) plus the few
of our own in `RECIPE_KEYS`. Any other key is an error that names it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from userlm.data_prep.templates import TEMPLATES
from userlm.errors import UserError

METHODS = ("full", "lora", "qlora")
LONG_SAMPLE_POLICIES = ("error", "skip")
# SFTConfig fields the run sets itself: the loss mask is ours, so these are not knobs.
FIXED_SFT_KEYS = {"completion_only_loss": True, "assistant_only_loss": False}


@dataclass
class Recipe:
    """Our own recipe keys; `sft` holds every `SFTConfig` field the recipe sets."""

    model_name_or_path: str
    dataset_path: str
    template: str
    output_dir: str
    method: str = "lora"
    dtype: str = "auto"
    attn_implementation: str | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    # Tokens (besides an added end marker) whose embedding rows LoRA trains too, e.g. the
    # Llama-3 base's untrained `<|eot_id|>` and header tokens.
    trainable_tokens: list[str] = field(default_factory=list)
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # A sample whose target turn alone exceeds max_length: stop the run, or skip it and
    # list it in OUTPUT/skipped_samples.jsonl.
    long_samples: str = "error"
    sft: dict = field(default_factory=dict)


RECIPE_KEYS = {f.name for f in dataclasses.fields(Recipe)} - {"sft"}
TEXT_KEYS = {"model_name_or_path", "dataset_path", "template", "output_dir", "run_name", "hub_model_id"}
STRATEGY_KEYS = ("eval_strategy", "save_strategy", "logging_strategy")
SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def sft_config_keys() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig) if f.init}


def parse_override(text: str) -> tuple[str, object]:
    """`key=value` from the command line; the value is read as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise UserError(f"Override {text!r} is not key=value; write it like `learning_rate=1e-4`.")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Recipe {path} does not exist; pass a YAML file such as recipes/smollm2-cpu-quickstart.yaml.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"Recipe {path} is not valid YAML ({error.__class__.__name__}); fix the file.") from None
    if not isinstance(values, dict):
        raise UserError(f"Recipe {path} must be a mapping of keys to values.")
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    return recipe_from_dict(values, base_dir=path.parent)


def recipe_from_dict(values: dict, base_dir: Path | None = None) -> Recipe:
    """Validate keys and values; paths in the recipe are relative to the recipe's folder."""
    sft_keys = sft_config_keys()
    unknown = sorted(k for k in values if k not in RECIPE_KEYS and k not in sft_keys)
    if unknown:
        raise UserError(
            f"Unknown recipe key {unknown[0]!r}; use a TRL SFTConfig field or one of: {', '.join(sorted(RECIPE_KEYS))}."
        )
    for key in ("model_name_or_path", "dataset_path", "template", "output_dir"):
        if values.get(key) in (None, ""):
            raise UserError(f"The recipe sets no {key!r}; add `{key}: ...` to it or pass {key}=... on the command line.")
    for key, fixed in FIXED_SFT_KEYS.items():
        if key in values and values[key] != fixed:
            raise UserError(f"Recipe key {key!r} must be {fixed!r}: the loss mask comes from the flipped samples.")
    if values["template"] not in TEMPLATES:
        raise UserError(f"Unknown template {values['template']!r}; choose one of: {', '.join(TEMPLATES)}.")
    if values.get("method", "lora") not in METHODS:
        raise UserError(f"Unknown method {values['method']!r}; choose one of: {', '.join(METHODS)}.")
    if values.get("long_samples", "error") not in LONG_SAMPLE_POLICIES:
        raise UserError(f"long_samples must be one of {', '.join(LONG_SAMPLE_POLICIES)}, not {values['long_samples']!r}.")
    values = {k: v if k in TEXT_KEYS else yaml_number(v) for k, v in values.items()}
    for key in STRATEGY_KEYS:
        if values.get(key) is False:
            values[key] = "no"  # YAML 1.1 reads `eval_strategy: no` as false
    ours = {k: v for k, v in values.items() if k in RECIPE_KEYS}
    sft = {k: v for k, v in values.items() if k not in RECIPE_KEYS}
    for key in ("dataset_path", "model_name_or_path"):
        ours[key] = resolve_path(str(ours[key]), base_dir)
    deepspeed = sft.get("deepspeed")
    if isinstance(deepspeed, str):
        sft["deepspeed"] = resolve_path(deepspeed, base_dir)
        if not Path(sft["deepspeed"]).is_file():
            raise UserError(f"The DeepSpeed config {deepspeed} does not exist; point `deepspeed:` at a JSON file.")
    ours["trainable_tokens"] = list(ours.get("trainable_tokens") or [])
    return Recipe(**ours, sft=sft)


def yaml_number(value):
    """YAML 1.1 reads `1e-4` (no dot) as a string; a recipe means the number."""
    if isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


def resolve_path(value: str, base_dir: Path | None) -> str:
    """`default` is the embedded model; a relative path that exists next to the recipe wins over the cwd."""
    if value == "default":
        from userlm.defaults import default_model_dir

        return str(default_model_dir())
    candidate = Path(value).expanduser()
    if not candidate.is_absolute() and base_dir is not None and not candidate.exists():
        beside = base_dir / candidate
        if beside.exists():
            return str(beside)
    return str(candidate)

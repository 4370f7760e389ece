"""`TrainConfig`: a training recipe, at once its YAML file, its command-line flags and its Python API.

    userlm train smollm2-cpu-quickstart dataset_path=out/prep --max_steps 50
    train(load_recipe("recipes/my-recipe.yaml", ["learning_rate=1e-4"]))

A recipe's keys are our own few (the fields below) plus any TRL `SFTConfig` field under its
own name, which lands in `TrainConfig.sft` and goes to `SFTConfig` as it is. Both are checked
by type when the config is built (userlm/config.py), so `learning_rate: fast` or
`max_steps: -3` is one sentence naming the key, before any model loads; an unknown key is
one sentence naming it. Relative paths in a recipe (`deepspeed`, `dataset_path`, a model
folder) are read beside the recipe when they exist there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from trl import SFTConfig

from userlm.config import Config, check_value, parse_config, shipped_finder, unknown_key_message
from userlm.errors import UserError
from userlm.flipped.templates import TEMPLATES

# SFTConfig fields the run sets itself: the loss mask comes from the flipped samples.
FIXED_SFT_KEYS = {"completion_only_loss": True, "assistant_only_loss": False}
# YAML 1.1 reads `eval_strategy: no` as false.
STRATEGY_KEYS = ("eval_strategy", "save_strategy", "logging_strategy")
# Bounds of the SFTConfig keys recipes set, checked with our own keys' bounds.
SFT_BOUNDS = {
    "learning_rate": {"above": 0, "max": 1},
    "warmup_ratio": {"min": 0, "max": 1},
    "dataloader_num_workers": {"min": 0},
    "num_train_epochs": {"above": 0},
    "per_device_train_batch_size": {"min": 1},
    "per_device_eval_batch_size": {"min": 1},
    "gradient_accumulation_steps": {"min": 1},
    "max_length": {"min": 16},  # fewer tokens cannot hold a system message, the headers and a target
    "warmup_steps": {"min": 0},
    "logging_steps": {"above": 0},
    "save_steps": {"above": 0},
    "eval_steps": {"above": 0},
    "save_total_limit": {"min": 1},
    "weight_decay": {"min": 0},
    "max_grad_norm": {"min": 0},
    "seed": {"min": 0},
}


@dataclass(kw_only=True)
class TrainConfig(Config):
    """Our own recipe keys; `sft` holds every `SFTConfig` key the recipe sets."""

    passthrough: ClassVar[type] = SFTConfig
    passthrough_field: ClassVar[str] = "sft"
    path_keys: ClassVar[tuple[str, ...]] = ("deepspeed", "dataset_path", "model_name_or_path", "init_adapter")

    model_name_or_path: str = field(
        metadata={
            "nonempty": True,
            "help": "base model: a saved folder, a hub id, or default (the embedded SmolLM2-135M-Instruct)",
        }
    )
    dataset_path: Path = field(
        metadata={"help": "flipped samples: a `userlm prep` output folder, a DatasetDict folder or one JSONL file"}
    )
    template: str = field(
        metadata={
            "choices": tuple(TEMPLATES),
            "help": f"the flipped chat template of the base's chat format: {' or '.join(TEMPLATES)}",
        }
    )
    output_dir: str = field(
        metadata={"nonempty": True, "help": "where checkpoints, the model or adapter and train_summary.json go"}
    )
    method: Literal["full", "lora", "qlora"] = field(
        default="lora", metadata={"help": "full (fine-tuning), lora, or qlora (LoRA on a 4-bit base)"}
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto", metadata={"help": "dtype the base model loads in: auto, bfloat16, float16 or float32"}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "e.g. flash_attention_2 or sdpa (default: flash_attention_2 where installed on a GPU, else sdpa)"
        },
    )
    lora_r: int = field(default=16, metadata={"min": 1, "max": 4096, "help": "LoRA rank"})
    lora_alpha: int = field(
        default=32, metadata={"min": 1, "help": "LoRA scaling: the update is multiplied by lora_alpha / lora_r"}
    )
    lora_dropout: float = field(default=0.05, metadata={"min": 0, "max": 0.9, "help": "dropout on the LoRA input"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"nonempty": True, "help": "module names LoRA adapts, or all-linear"},
    )
    trainable_tokens: list[str] = field(
        default_factory=list,
        metadata={
            "help": "tokens whose embedding rows LoRA trains too, besides an added end marker, "
            "e.g. the Llama-3 base's untrained <|eot_id|>"
        },
    )
    end_marker_init: Literal["eos", "eot", "mean"] = field(
        default="eos",
        metadata={
            "help": "where an added <|endconversation|> starts, embedding and output rows alike: a copy of the base's "
            "eos token's rows (eos), of the template's end-of-turn token's (eot), or transformers' draw around the "
            "vocabulary's mean (mean)"
        },
    )
    new_token_learning_rate: float | None = field(
        default=None,
        metadata={
            "above": 0,
            "help": "learning rate of the token rows LoRA trains (the added end marker and trainable_tokens), "
            "on the same schedule as learning_rate (default: learning_rate); lora and qlora only",
        },
    )
    end_sample_repeats: int = field(
        default=1,
        metadata={
            "min": 1,
            "max": 100,
            "help": "how many times each end sample (target <|endconversation|>) is trained on per epoch",
        },
    )
    init_adapter: Path | None = field(
        default=None,
        metadata={
            "help": "a LoRA adapter folder written by `userlm train` to start from and keep training "
            "(e.g. a persona fine-tune of the general simulator); its base is model_name_or_path"
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"min": 1, "help": "use only the first N training samples"}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"min": 1, "help": "use only the first N validation samples"}
    )
    long_samples: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "a sample longer than max_length loses its oldest whole "
            "exchanges (the system message and the target "
            "are never cut); one that still does not fit stops the run (error), or is skipped and listed in "
            "skipped_samples.jsonl (skip)"
        },
    )
    sft: dict[str, Any] = field(default_factory=dict, metadata={"help": "TRL SFTConfig keys, under their own names"})

    @classmethod
    def passthrough_types(cls) -> dict[str, Any]:
        types = super().passthrough_types()
        for key in STRATEGY_KEYS:
            types[key] = types[key] | bool  # validate() reads false back as "no"
        types["bf16"] = bool | Literal["auto"]  # auto: the machine chooses (userlm/hardware.py)
        return types

    def validate(self) -> None:
        types = self.passthrough_types()
        for key, value in self.sft.items():
            if key not in types:
                raise UserError(unknown_key_message(key, sorted(types), " in the recipe"))
            self.sft[key] = check_value(key, value, types[key], SFT_BOUNDS.get(key))
        for key in STRATEGY_KEYS:
            if self.sft.get(key) is False:
                self.sft[key] = "no"
        if "report_to" in self.sft:
            self.sft["report_to"] = report_targets(self.sft["report_to"])
        steps = self.sft.get("max_steps", -1)
        if steps != -1 and steps < 1:
            raise UserError(f"`max_steps` must be -1 (train for num_train_epochs) or at least 1, not {steps}.")
        for key, fixed in FIXED_SFT_KEYS.items():
            if key in self.sft and self.sft[key] != fixed:
                raise UserError(f"`{key}` must be {fixed}: the loss mask comes from the flipped samples.")
        deepspeed = self.sft.get("deepspeed")
        if isinstance(deepspeed, str) and not Path(deepspeed).is_file():
            raise UserError(f"The DeepSpeed config {deepspeed} does not exist; point `deepspeed` at a JSON file.")
        if self.method == "full" and self.new_token_learning_rate is not None:
            raise UserError(
                "`new_token_learning_rate` applies to the token rows LoRA trains; full fine-tuning trains whole "
                "embedding matrices at learning_rate, so remove the key or use method: lora."
            )
        if self.init_adapter is not None and self.method == "full":
            raise UserError("`init_adapter` continues a LoRA adapter; use method: lora or qlora, or remove the key.")
        check_output_dir(Path(self.output_dir), self)


def check_output_dir(output_dir: Path, config: TrainConfig) -> None:
    """The run writes only into output_dir, which must not be, nor lie inside, one of its inputs."""
    output = output_dir.resolve()
    inputs = [("dataset_path", config.dataset_path), ("init_adapter", config.init_adapter)]
    if Path(config.model_name_or_path).exists():
        inputs.append(("model_name_or_path", Path(config.model_name_or_path)))
    for key, path in inputs:
        if path is None:
            continue
        source = Path(path).resolve()
        if output == source or source in output.parents:
            raise UserError(
                f"output_dir {output_dir} is {'' if output == source else 'inside '}the {key} {path}, which training "
                "would overwrite; choose an output_dir outside it."
            )


def report_targets(value) -> list[str]:
    """`report_to` as the list SFTConfig makes of it (`none` -> ["none"], `wandb` -> ["wandb"])."""
    if value is None:
        return ["none"]
    return [value] if isinstance(value, str) else list(value)


find_recipe = shipped_finder("recipe", "smollm2-cpu-quickstart")


def load_recipe(name_or_path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """A shipped recipe by name (`smollm2-cpu-quickstart`) or a YAML path, with
    `key=value` or `--key value` overrides."""
    return parse_train_words([str(name_or_path), *overrides])


def parse_train_words(words: list[str]) -> TrainConfig:
    return parse_config(
        TrainConfig, list(words), prog="userlm train", description=TRAIN_DESCRIPTION, find_config=find_recipe
    )


TRAIN_DESCRIPTION = (
    "Fine-tune a user simulator with TRL's SFTTrainer from a recipe: a YAML file or the name of a shipped one "
    "(smollm2-cpu-quickstart, userlm8b-lora-persona, llama31-8b-qlora-1gpu, llama31-8b-full-zero3). "
    "Besides the keys below, every TRL SFTConfig field is a key (learning_rate, max_steps, max_length, "
    "per_device_train_batch_size, deepspeed, resume_from_checkpoint: auto, report_to, ...)."
)


@dataclass(kw_only=True)
class MergeConfig(Config):
    adapter: Path = field(
        metadata={"positional": True, "help": "an adapter folder written by `userlm train` (lora or qlora)"}
    )
    out: Path = field(metadata={"help": "folder to write the merged model and tokenizer to"})
    base: str | None = field(
        default=None, metadata={"help": "the unquantised base model (default: the adapter's base_model_name_or_path)"}
    )
    dtype: Literal["bfloat16", "float32"] = field(default="bfloat16", metadata={"help": "dtype of the merged weights"})

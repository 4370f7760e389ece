"""`userlm train`: a recipe run with TRL's SFTTrainer, in named steps (`build_trainer`, then `train`).

1. the SFTConfig, first: under ZeRO-3 it must exist before the model loads, so that
   `from_pretrained` partitions the weights as they load;
2. the tokenizer, with the end marker and the flipped template (train/vocab.py);
3. the flipped samples, tokenised by data_prep into `input_ids` + `completion_mask`
   (train/data.py), before the model so that data errors come early; TRL turns the mask
   into labels because `completion_only_loss=True`;
4. the model: full precision, or 4-bit for QLoRA; embeddings grown for new tokens;
5. LoRA / QLoRA adapters, with the new tokens' embedding rows trainable;
6. the trainer; then train (resuming if asked), evaluate on held-out user turns, save.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from userlm.atomic import write_json, write_jsonl
from userlm.data_prep.templates import FlippedTemplate, get_template
from userlm.errors import UserError
from userlm.summary import Summary

from .config import FIXED_SFT_KEYS, TrainConfig
from .data import prepare_datasets
from .vocab import prepare_tokenizer, resize_embeddings, token_rows_to_train


@dataclass
class Run:
    """A trainer ready to go, and what `train` needs to finish and report the run."""

    trainer: object
    config: TrainConfig
    tokenizer: object
    added_tokens: list[str]
    skipped: list[dict]
    resume: str | None


def build_trainer(config: TrainConfig) -> Run:
    """Steps 1-6: everything up to `trainer.train()`."""
    from trl import SFTTrainer

    template = get_template(config.template)
    attention = config.attn_implementation or default_attention()
    args, resume = training_args(config, attention)
    tokenizer, added_tokens = load_tokenizer(config, template)
    train_dataset, eval_dataset, skipped = load_data(config, args, tokenizer, template)
    model = load_model(config, args, attention, tokenizer)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config, model, tokenizer, added_tokens),
    )
    if config.method != "full":
        give_head_a_bias(trainer.model)
        save_trained_rows_only(trainer.model)
    return Run(trainer, config, tokenizer, added_tokens, skipped, resume)


def train(config: TrainConfig) -> dict:
    """Run the recipe; returns its summary (losses, steps, where it wrote), also saved as train_summary.json."""
    run = build_trainer(config)
    trainer, output_dir = run.trainer, Path(config.output_dir)
    result = trainer.train(resume_from_checkpoint=run.resume)
    final_eval = trainer.evaluate() if trainer.eval_dataset is not None else {}
    trainer.save_model(str(output_dir))
    summary = {
        "output_dir": str(output_dir),
        "method": config.method,
        "template": config.template,
        "added_tokens": run.added_tokens,
        "train_samples": len(trainer.train_dataset),
        "eval_samples": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "skipped_samples": len(run.skipped),
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "resumed_from": run.resume,
        "eval_loss_before": first_eval_loss(trainer.state.log_history),
        "eval_loss_after": final_eval.get("eval_loss"),
    }
    if trainer.is_world_process_zero():
        if run.skipped:
            write_jsonl(output_dir / "skipped_samples.jsonl", run.skipped)
        write_json(output_dir / "train_summary.json", summary)
    return summary


def train_summary(summary: dict) -> Summary:
    """The closing table of a run: losses, steps, samples, and what it wrote."""
    before, after = summary["eval_loss_before"], summary["eval_loss_after"]
    output_dir = Path(summary["output_dir"])
    rows = [
        ("steps", summary["global_step"]),
        ("training samples", summary["train_samples"]),
        ("train loss", f"{summary['train_loss']:.4f}"),
    ]
    if after is not None:
        rows.append(("held-out user-turn loss before", "not measured" if before is None else f"{before:.4f}"))
        rows.append(("held-out user-turn loss after", f"{after:.4f}"))
        rows.append(("held-out samples", summary["eval_samples"]))
    notes = []
    if summary["resumed_from"]:
        notes.append(f"Resumed from {summary['resumed_from']}.")
    if summary["added_tokens"]:
        notes.append(f"Added to the vocabulary: {', '.join(summary['added_tokens'])}.")
    wrote = {"adapter" if summary["method"] != "full" else "model": output_dir, "summary": output_dir / "train_summary.json"}
    if summary["skipped_samples"]:
        notes.append(f"Skipped {summary['skipped_samples']} samples whose target turn is longer than max_length.")
        wrote["skipped samples"] = output_dir / "skipped_samples.jsonl"
    return Summary(
        title=f"userlm train: {summary['method']}, {summary['template']} template",
        columns=("", "value"),
        rows=rows,
        notes=notes,
        wrote=wrote,
    )


# ---------------------------------------------------------------- 1. training arguments


def training_args(config: TrainConfig, attention: str):
    """The SFTConfig of the run and the checkpoint to resume from."""
    import torch
    from trl import SFTConfig

    output_dir = Path(config.output_dir)
    sft = dict(config.sft)
    resume = resolve_resume(sft.pop("resume_from_checkpoint", None), output_dir)
    sft = {**batching_defaults(sft, attention), **cpu_deepspeed_state(sft), **sft}
    if "bf16" not in sft and not torch.cuda.is_available():
        sft["bf16"] = False  # TRL defaults to bf16, which the CPU trainer refuses
    configure_wandb(sft.get("report_to", []), output_dir)
    try:
        return SFTConfig(output_dir=str(output_dir), **FIXED_SFT_KEYS, **sft), resume
    except (TypeError, ValueError) as error:
        raise UserError(f"The recipe's training settings are invalid: {error}") from None


def batching_defaults(sft: dict, attention: str) -> dict:
    """How batches are built when the recipe does not say.

    Flash attention (GPU) keeps packed samples apart, so samples are packed without padding
    (bfd). Without it, packed samples would attend to each other, so batches are only
    grouped by length, which keeps padding low.
    """
    if "packing" in sft or "train_sampling_strategy" in sft:
        return {}
    if attention.startswith("flash_attention"):
        return {"packing": True, "packing_strategy": "bfd"}
    return {"train_sampling_strategy": "group_by_length"}


def cpu_deepspeed_state(sft: dict) -> dict:
    """DeepSpeed on CPU ranks (DESIGN.md 8): the process group, made before the SFTConfig.

    Left to TrainingArguments, accelerate finds no GPU backend, records one process, and
    DeepSpeed's "auto" batch sizes come out 1/world_size too small. Initialising the
    shared state with gloo first and telling the trainer to use it counts every rank.
    """
    import torch

    if not sft.get("deepspeed") or torch.cuda.is_available() or "LOCAL_RANK" not in os.environ:
        return {}
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    return {"accelerator_config": {"use_configured_state": True}}


def resolve_resume(value: str | None, output_dir: Path) -> str | None:
    """`auto`: the newest checkpoint-N in output_dir, or a fresh start when there is none."""
    from transformers.trainer_utils import get_last_checkpoint

    if not value:
        return None
    if value == "auto":
        return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if not Path(value).is_dir():
        raise UserError(f"resume_from_checkpoint {value} is not a checkpoint folder; use `auto` or a checkpoint-N path.")
    return str(value)


def configure_wandb(report_to: list[str], output_dir: Path) -> None:
    """W&B only when asked; with no credentials it runs offline (never a prompt) and writes its run under output_dir."""
    if not {"wandb", "all"} & set(report_to):
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_DIR", str(output_dir))
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    if wandb.run is not None or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return  # the trainer logs to the run already open in this process, or the mode is set
    if not wandb_credentials_configured():
        os.environ["WANDB_MODE"] = "offline"


def wandb_credentials_configured() -> bool:
    """wandb's own lookup (WANDB_API_KEY, its settings, .netrc), without a prompt or a network call."""
    import wandb

    # wandb reads the environment once per process into its settings; dropping them before
    # and after (no run is open) makes this lookup, then wandb.init, read WANDB_MODE as it is now.
    wandb.teardown()
    configured = wandb.login(prompt=False, verify=False)
    wandb.teardown()
    return configured


# ---------------------------------------------------------------- 2-4. tokenizer, data, model


def model_folder(name: str) -> str:
    """`default` is the embedded SmolLM2; anything else is a folder or a hub id."""
    if name == "default":
        from userlm.defaults import default_model_dir

        return str(default_model_dir())
    if not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"Model {name} is not a local folder and the hub is offline; set model_name_or_path to a saved model folder.")
    return name


def load_tokenizer(config: TrainConfig, template: FlippedTemplate):
    """The base's tokenizer with the end marker and the flipped template; returns it and the tokens added."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_folder(config.model_name_or_path))
    except OSError:
        raise UserError(
            f"Cannot load a tokenizer from {config.model_name_or_path}; set model_name_or_path to a saved model folder or a hub id."
        ) from None
    return tokenizer, prepare_tokenizer(tokenizer, template)


def load_data(config: TrainConfig, args, tokenizer, template: FlippedTemplate):
    """Train and validation sets, and the samples skipped as too long."""
    train_dataset, eval_dataset, skipped = prepare_datasets(config, tokenizer, template, args.max_length)
    if eval_dataset is None and (args.eval_strategy != "no" or args.eval_on_start):
        raise UserError(f"The recipe asks for evaluation but {config.dataset_path} has no validation split; set eval_strategy=no.")
    return train_dataset, eval_dataset, skipped


def load_model(config: TrainConfig, args, attention: str, tokenizer):
    """The base model (4-bit NF4 for QLoRA), its embeddings grown to the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attention}
    if config.dtype != "auto":
        kwargs["dtype"] = getattr(torch, config.dtype)
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if args.bf16 else torch.float32,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_folder(config.model_name_or_path), **kwargs)
    resize_embeddings(model, tokenizer)
    return model


def default_attention() -> str:
    import torch

    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


# ---------------------------------------------------------------- 5. adapters


def lora_config(config: TrainConfig, model, tokenizer, added_tokens: list[str]):
    """LoRA on the recipe's modules, plus the embedding rows of new and named tokens; None for full fine-tuning."""
    if config.method == "full":
        return None
    from peft import LoraConfig

    rows = token_rows_to_train(tokenizer, added_tokens, config.trainable_tokens)
    # A tied head follows the embedding's trainable rows; an untied one (Llama-3.1-8B) needs its own.
    tied = model.config.get_text_config().tie_word_embeddings
    token_rows = {"embed_tokens": rows} if tied else {"embed_tokens": rows, "lm_head": rows}
    modules = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if modules == ["all-linear"] else modules,
        trainable_token_indices=token_rows if rows else None,
        task_type="CAUSAL_LM",
    )


def give_head_a_bias(model) -> None:
    """TRL's fused loss reads `lm_head.bias`, which PEFT's TrainableTokensWrapper lacks (still so in trl 1.16, peft 0.21)."""
    head = model.get_output_embeddings()
    if not hasattr(head, "bias"):
        head.bias = None


def save_trained_rows_only(model) -> None:
    """Every save (checkpoints too) holds the adapter and the trained token rows, not whole embedding matrices.

    Once the vocabulary grew, PEFT 0.21 saves both full vocab x hidden matrices ("Setting
    `save_embedding_layers` to `True`"), 2 GB a checkpoint for Llama-3.1-8B, though the new
    rows are already in `trainable_tokens_delta`.
    """
    model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)


# ---------------------------------------------------------------- 6. after training


def first_eval_loss(log_history: list[dict]) -> float | None:
    """The eval loss logged at step 0 (`eval_on_start: true`), if any."""
    for entry in log_history:
        if "eval_loss" in entry and entry.get("step") == 0:
            return entry["eval_loss"]
    return None

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
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from userlm.atomic import share_files, write_jsonl
from userlm.errors import UserError
from userlm.flipped.templates import FlippedTemplate, get_template
from userlm.hardware import resolve_bf16, set_cpu_threads
from userlm.summary import Summary

from .base_model import recorded_name
from .card import train_card, write_card
from .config import FIXED_SFT_KEYS, TrainConfig
from .data import prepare_datasets
from .outputs import mark_finished, mark_started, portable_training_args
from .vocab import init_new_rows, init_source_token, prepare_tokenizer, resize_embeddings, token_rows_to_train

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A trainer ready to go, and what `train` needs to finish and report the run."""

    trainer: object
    config: TrainConfig
    tokenizer: object
    added_tokens: list[str]
    # The token whose rows the added tokens started from (None: transformers' mean resizing).
    init_source: str | None
    # What happened to the samples: skipped (list), truncated and end_samples (counts), train_samples.
    data: dict
    resume: str | None


def build_trainer(config: TrainConfig) -> Run:
    """Steps 1-6: everything up to `trainer.train()`."""
    from .trainer import SimulatorTrainer

    template = get_template(config.template)
    check_model_folder(config.model_name_or_path)
    if config.init_adapter is not None:
        check_adapter_folder(config.init_adapter)
    attention = config.attn_implementation or default_attention()
    args, resume = training_args(config, attention)
    tokenizer, added_tokens = load_tokenizer(config, template)
    init_source = init_source_token(tokenizer, template, config.end_marker_init) if added_tokens else None
    train_dataset, eval_dataset, data = load_data(config, args, tokenizer, template)
    model = load_model(config, args, attention, tokenizer)
    init_new_rows(model, tokenizer, added_tokens, init_source)
    if config.init_adapter is not None:
        model = continue_adapter(model, config.init_adapter)
    trainer = SimulatorTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=None if config.init_adapter is not None else lora_config(config, model, tokenizer, added_tokens),
        new_token_learning_rate=config.new_token_learning_rate,
    )
    if config.method != "full":
        give_head_a_bias(trainer.model)
        save_trained_rows_only(trainer.model)
        # Every save (checkpoints' adapter_config.json and PEFT's card too) names the base by public id,
        # not by where it lies on this machine (train/base_model.py).
        base = recorded_name(config.model_name_or_path)
        trainer.model.peft_config["default"].base_model_name_or_path = base
        trainer.model.get_base_model().config.name_or_path = base
    return Run(trainer, config, tokenizer, added_tokens, init_source, data, resume)


def train(config: TrainConfig) -> dict:
    """Run the recipe; returns its summary (losses, steps, where it wrote), also saved as train_summary.json.

    The output folder is marked unfinished before the first step and finished only once the
    final model and train_summary.json are written (train/outputs.py).
    """
    run = build_trainer(config)
    trainer, output_dir = run.trainer, Path(config.output_dir)
    if trainer.is_world_process_zero():
        mark_started(output_dir)
    result = trainer.train(resume_from_checkpoint=run.resume)
    final_eval = trainer.evaluate() if trainer.eval_dataset is not None else {}
    trainer.save_model(str(output_dir))
    summary = {
        "output_dir": str(output_dir),
        "method": config.method,
        "template": config.template,
        "added_tokens": run.added_tokens,
        "end_marker_init": run.init_source,
        "new_token_learning_rate": config.new_token_learning_rate,
        "init_adapter": None if config.init_adapter is None else str(config.init_adapter),
        "train_samples": run.data["train_samples"],
        "end_samples": run.data["end_samples"],
        "end_sample_repeats": config.end_sample_repeats,
        "truncated_samples": run.data["truncated"],
        "eval_samples": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "skipped_samples": len(run.data["skipped"]),
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "resumed_from": run.resume,
        "eval_loss_before": first_eval_loss(trainer.state.log_history),
        "eval_loss_after": final_eval.get("eval_loss"),
    }
    if trainer.is_world_process_zero():
        if run.data["skipped"]:
            write_jsonl(output_dir / "skipped_samples.jsonl", run.data["skipped"])
        write_card(output_dir, train_card(config, summary))
        portable_training_args(output_dir)
        share_files(output_dir)
        mark_finished(output_dir, summary)
    return summary


def train_summary(summary: dict) -> Summary:
    """The closing table of a run: losses, steps, samples, and what it wrote."""
    before, after = summary["eval_loss_before"], summary["eval_loss_after"]
    output_dir = Path(summary["output_dir"])
    rows = [
        ("steps", summary["global_step"]),
        ("training samples", summary["train_samples"]),
        ("end samples", end_samples_text(summary)),
        ("train loss", f"{summary['train_loss']:.4f}"),
    ]
    if after is not None:
        rows.append(("held-out user-turn loss before", "not measured" if before is None else f"{before:.4f}"))
        rows.append(("held-out user-turn loss after", f"{after:.4f}"))
        rows.append(("held-out samples", summary["eval_samples"]))
    notes = []
    if summary["resumed_from"]:
        notes.append(f"Resumed from {summary['resumed_from']}.")
    if summary["init_adapter"]:
        notes.append(f"Continued the adapter {summary['init_adapter']}.")
    if summary["added_tokens"]:
        start = summary["end_marker_init"]
        notes.append(
            f"Added to the vocabulary: {', '.join(summary['added_tokens'])}, its rows starting as a copy of {start}'s."
            if start
            else f"Added to the vocabulary: {', '.join(summary['added_tokens'])}, "
            "its rows drawn around the vocabulary's mean."
        )
    if summary["new_token_learning_rate"]:
        notes.append(f"Token rows trained at learning rate {summary['new_token_learning_rate']:g}.")
    if summary["truncated_samples"]:
        notes.append(
            f"{summary['truncated_samples']} samples longer than max_length lost their oldest turns "
            "(system message and target kept)."
        )
    wrote = {
        "adapter" if summary["method"] != "full" else "model": output_dir,
        "summary": output_dir / "train_summary.json",
    }
    if summary["skipped_samples"]:
        notes.append(
            f"Skipped {summary['skipped_samples']} samples that do not fit max_length even with their history dropped."
        )
        wrote["skipped samples"] = output_dir / "skipped_samples.jsonl"
    return Summary(
        title=f"userlm train: {summary['method']}, {summary['template']} template",
        columns=("", "value"),
        rows=rows,
        notes=notes,
        wrote=wrote,
    )


def end_samples_text(summary: dict) -> str:
    repeats = summary["end_sample_repeats"]
    return f"{summary['end_samples']}" + (f", each trained {repeats} times" if repeats > 1 else "")


# ---------------------------------------------------------------- 1. training arguments


def training_args(config: TrainConfig, attention: str):
    """The SFTConfig of the run and the checkpoint to resume from."""
    import torch
    from trl import SFTConfig

    output_dir = Path(config.output_dir)
    sft = dict(config.sft)
    resume = resolve_resume(sft.pop("resume_from_checkpoint", None), output_dir)
    sft = {**batching_defaults(sft, attention), **cpu_deepspeed_state(sft), **sft}
    precision = resolve_bf16(sft.get("bf16", False if sft.get("fp16") else "auto"))
    sft["bf16"] = precision.bf16
    if precision.bf16 and not torch.cuda.is_available():
        sft.setdefault("use_cpu", True)  # transformers refuses bf16 without a GPU unless told the run is on the CPU
    threads = "GPU" if torch.cuda.is_available() else set_cpu_threads()  # on every rank, said once
    if os.environ.get("RANK", "0") == "0":
        print(f"userlm train: {precision.describe()}; {threads}; {attention} attention", file=sys.stderr)
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
    """DeepSpeed on CPU ranks (docs/design.md#real-components): the process group, made before the SFTConfig.

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
    """`auto`: the newest complete checkpoint-N in output_dir, or a fresh start when there is none.

    A checkpoint torn by a kill while it was being saved (the trainer writes trainer_state.json
    last; weights cut short) is skipped with a warning naming it.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not value:
        return None
    if value != "auto":
        if not Path(value).is_dir():
            raise UserError(
                f"resume_from_checkpoint {value} is not a checkpoint folder; use `auto` or a checkpoint-N path."
            )
        problem = checkpoint_problem(Path(value))
        if problem:
            raise UserError(
                f"resume_from_checkpoint {value} is incomplete ({problem}); use `auto` or an earlier checkpoint."
            )
        return str(value)
    if not output_dir.is_dir():
        return None
    steps = {}
    for folder in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = folder.name.rsplit("-", 1)[1]
        if folder.is_dir() and suffix.isdigit():
            steps[folder] = int(suffix)
    for folder in sorted(steps, key=steps.get, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        log.warning(
            "Skipping the checkpoint %s, which is incomplete (%s): probably killed while saving; "
            "resuming from an earlier one.",
            folder,
            problem,
        )
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete."""
    from safetensors import safe_open

    try:
        json.loads((folder / "trainer_state.json").read_text())
    except OSError:
        return "no trainer_state.json"
    except ValueError:
        return "trainer_state.json is cut short"
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(weights, "pt"):
                pass
        except Exception:  # safetensors raises its own error types for a cut or empty file
            return f"{weights.name} is cut short"
    return None


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
        raise UserError(
            f"Model {name} is not a local folder and the hub is offline; set "
            "model_name_or_path to a saved model folder."
        )
    return name


def check_model_folder(name: str) -> None:
    """A local model_name_or_path must be a model folder with weights: one sentence otherwise, before anything loads."""
    folder = Path(model_folder(name))
    if not folder.exists():
        return  # a hub id
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise UserError(
            f"model_name_or_path {name} is a LoRA adapter, not a model; set it to the adapter's base "
            "and the adapter as init_adapter, or merge it first with `userlm merge`."
        )
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    if not folder.is_dir() or not (folder / "config.json").is_file() or not has_weights:
        raise UserError(
            f"model_name_or_path {name} is not a model folder (config.json and weights such as "
            "model.safetensors); point it at a folder saved with save_pretrained, or a hub id."
        )


def check_adapter_folder(adapter: Path) -> None:
    """init_adapter must be a finished `userlm train` LoRA output."""
    from .outputs import unfinished_run_message

    if not (adapter / "adapter_config.json").is_file():
        raise UserError(
            f"init_adapter {adapter} is not an adapter folder (no adapter_config.json); "
            "point it at the output_dir of a finished lora or qlora run."
        )
    unfinished = unfinished_run_message(adapter)
    if unfinished:
        raise UserError(unfinished)


def load_tokenizer(config: TrainConfig, template: FlippedTemplate):
    """The base's tokenizer with the end marker and the flipped template; returns it and the tokens added.

    Continuing an adapter, its own tokenizer (the end marker already in it) is the one.
    """
    from transformers import AutoTokenizer

    source = config.init_adapter or model_folder(config.model_name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError:
        raise UserError(
            f"Cannot load a tokenizer from {source}; set model_name_or_path to a saved model folder or a hub id."
        ) from None
    return tokenizer, prepare_tokenizer(tokenizer, template)


def load_data(config: TrainConfig, args, tokenizer, template: FlippedTemplate):
    """Train and validation sets, and what happened to the samples on the way."""
    train_dataset, eval_dataset, report = prepare_datasets(config, tokenizer, template, args.max_length)
    if eval_dataset is None and (args.eval_strategy != "no" or args.eval_on_start):
        raise UserError(
            f"The recipe asks for evaluation but {config.dataset_path} has no validation split; set eval_strategy=no."
        )
    return train_dataset, eval_dataset, report


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
    resize_embeddings(model, tokenizer, mean_resizing=config.end_marker_init == "mean")
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


def continue_adapter(model, adapter: Path):
    """The base with a `userlm train` LoRA adapter loaded trainable: LoRA weights and
    token rows go on from where it ended."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def give_head_a_bias(model) -> None:
    """TRL's fused loss reads `lm_head.bias`, which PEFT's TrainableTokensWrapper
    lacks (still so in trl 1.16, peft 0.21)."""
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

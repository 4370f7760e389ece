"""`userlm train`: one recipe, read top to bottom, run with TRL's SFTTrainer.

1. the SFTConfig (first: under ZeRO-3 it must exist before the model loads, so that
   `from_pretrained` partitions the weights as they load);
2. the tokenizer, with the end marker and the flipped template (train/vocab.py);
3. the flipped samples, tokenised by data_prep into `input_ids` + `completion_mask`
   (train/data.py); TRL turns the mask into labels because `completion_only_loss=True`;
4. the model: full precision, or 4-bit for QLoRA; embeddings grown for new tokens;
5. LoRA / QLoRA adapters (with the new tokens' embedding rows trainable);
6. train (resuming if asked), evaluate on held-out user turns, save all infer needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from userlm.data_prep.templates import get_template
from userlm.errors import UserError

from .config import FIXED_SFT_KEYS, Recipe
from .data import prepare_datasets, write_jsonl_atomic
from .vocab import prepare_tokenizer, resize_embeddings, token_rows_to_train


@dataclass
class Run:
    """A trainer ready to go, and what `train` needs to finish and report the run."""

    trainer: object
    recipe: Recipe
    tokenizer: object
    added_tokens: list[str]
    skipped: list[dict]
    resume: str | bool | None


def build_trainer(recipe: Recipe) -> Run:
    """Steps 1-5: everything up to `trainer.train()`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    template = get_template(recipe.template)
    output_dir = Path(recipe.output_dir)
    attn_implementation = recipe.attn_implementation or default_attention()

    # 1. Training arguments. Without flash attention, padding-free packing would let
    # samples attend to each other, so batches are grouped by length instead.
    sft = dict(recipe.sft)
    resume = resolve_resume(sft.pop("resume_from_checkpoint", None), output_dir)
    if "packing" not in sft and "train_sampling_strategy" not in sft:
        if attn_implementation.startswith("flash_attention"):
            sft.update(packing=True, packing_strategy="bfd")
        else:
            sft.update(train_sampling_strategy="group_by_length")
    if "bf16" not in sft and not torch.cuda.is_available():
        sft["bf16"] = False  # TRL defaults to bf16, which the CPU trainer refuses
    if sft.get("deepspeed") and not torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        sft["accelerator_config"] = init_cpu_deepspeed_state()
    configure_wandb(sft.get("report_to"), output_dir)
    try:
        args = SFTConfig(output_dir=str(output_dir), **FIXED_SFT_KEYS, **sft)
    except (TypeError, ValueError) as error:
        raise UserError(f"The recipe's training settings are invalid: {error}") from None

    # 2. Tokenizer.
    if not Path(recipe.model_name_or_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"Model {recipe.model_name_or_path} is not a local folder and the hub is offline; set model_name_or_path to a saved model folder.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(recipe.model_name_or_path)
    except OSError:
        raise UserError(f"Cannot load a tokenizer from {recipe.model_name_or_path}; set model_name_or_path to a saved model folder or a hub id.") from None
    added_tokens = prepare_tokenizer(tokenizer, template)

    # 3. Data, before the model so that data errors come early.
    train_dataset, eval_dataset, skipped = prepare_datasets(recipe, tokenizer, template, args.max_length)
    if eval_dataset is None and (args.eval_strategy != "no" or args.eval_on_start):
        raise UserError(f"The recipe asks for evaluation but {recipe.dataset_path} has no validation split; set eval_strategy=no.")

    # 4. Model.
    model_kwargs = {"attn_implementation": attn_implementation}
    if recipe.dtype != "auto":
        model_kwargs["dtype"] = getattr(torch, recipe.dtype)
    if recipe.method == "qlora":
        from transformers import BitsAndBytesConfig

        compute_dtype = torch.bfloat16 if args.bf16 else torch.float32
        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype
        )
        model_kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(recipe.model_name_or_path, **model_kwargs)
    resize_embeddings(model, tokenizer)

    # 5. Adapters.
    peft_config = None
    if recipe.method in ("lora", "qlora"):
        from peft import LoraConfig

        rows = token_rows_to_train(tokenizer, added_tokens, recipe.trainable_tokens)
        # A tied head follows the embedding's trainable rows; an untied one (Llama-3.1-8B) needs its own.
        tied = model.config.get_text_config().tie_word_embeddings
        token_rows = {"embed_tokens": rows} if tied else {"embed_tokens": rows, "lm_head": rows}
        peft_config = LoraConfig(
            r=recipe.lora_r,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=recipe.lora_dropout,
            target_modules=recipe.lora_target_modules,
            trainable_token_indices=token_rows if rows else None,
            task_type="CAUSAL_LM",
        )

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    # TRL's fused loss reads `lm_head.weight` and `lm_head.bias`; PEFT's TrainableTokensWrapper
    # gives the merged (differentiable) weight but no bias attribute, and these heads have none.
    head = trainer.model.get_output_embeddings()
    if not hasattr(head, "bias"):
        head.bias = None
    return Run(trainer, recipe, tokenizer, added_tokens, skipped, resume)


def train(recipe: Recipe) -> dict:
    """Run the recipe; returns a summary (losses, steps, where it wrote)."""
    run = build_trainer(recipe)
    trainer, output_dir = run.trainer, Path(recipe.output_dir)

    # 6. Train, evaluate, save.
    result = trainer.train(resume_from_checkpoint=run.resume)
    final_eval = trainer.evaluate() if trainer.eval_dataset is not None else {}
    if recipe.method == "full":
        trainer.save_model(str(output_dir))
    else:
        # Not trainer.save_model: when the vocabulary grew, PEFT would copy both whole embedding
        # matrices into the adapter, though the new rows are already in trainable_tokens_delta.
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.is_world_process_zero():
            peft_model = trainer.accelerator.unwrap_model(trainer.model)
            peft_model.save_pretrained(str(output_dir), state_dict=state_dict, save_embedding_layers=False)
    summary = {
        "output_dir": str(output_dir),
        "method": recipe.method,
        "template": recipe.template,
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
        run.tokenizer.save_pretrained(str(output_dir))
        if run.skipped:
            write_jsonl_atomic(output_dir / "skipped_samples.jsonl", run.skipped)
        write_json_atomic(output_dir / "train_summary.json", summary)
    return summary


def default_attention() -> str:
    import torch

    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def init_cpu_deepspeed_state() -> dict:
    """DeepSpeed on CPU ranks (DESIGN.md 8): the process group, made before the SFTConfig.

    Left to TrainingArguments, accelerate finds no GPU backend, records one process, and
    DeepSpeed's "auto" batch sizes come out 1/world_size too small. Initialising the
    shared state with gloo first and telling the trainer to use it counts every rank.
    """
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    return {"use_configured_state": True}


def resolve_resume(value, output_dir: Path) -> str | bool | None:
    """`auto`: the newest checkpoint-N in output_dir, or a fresh start when there is none."""
    from transformers.trainer_utils import get_last_checkpoint

    if value in (None, False, ""):
        return None
    if value == "auto":
        return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if value is True:
        return True
    if not Path(value).is_dir():
        raise UserError(f"resume_from_checkpoint {value} is not a checkpoint folder; use `auto` or a checkpoint-N path.")
    return str(value)


def configure_wandb(report_to, output_dir: Path) -> None:
    """W&B only when asked; with no login it runs offline (no prompt) and writes its run under output_dir."""
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "wandb" not in targets and "all" not in targets:
        return
    os.environ.setdefault("WANDB_DIR", str(output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _netrc_text()
    if not logged_in:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")


def _netrc_text() -> str:
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return path.read_text() if path.is_file() else ""


def first_eval_loss(log_history: list[dict]) -> float | None:
    """The eval loss logged at step 0 (`eval_on_start: true`), if any."""
    for entry in log_history:
        if "eval_loss" in entry and entry.get("step") == 0:
            return entry["eval_loss"]
    return None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)

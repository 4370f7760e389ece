"""Loading a simulator: a `userlm train` folder (full or LoRA adapter), a base plus an
adapter, a merged model, the embedded default, or a GGUF file.

The checkpoint layout is the train stage's contract: the tokenizer, with the flipped
template as its `chat_template` and `<|endconversation|>` in its vocabulary, is always
saved in the output folder; a LoRA output is a PEFT adapter folder whose
`adapter_config.json` names the base. Real UserLM-8b checkpoints load as they are: their
own `chat_template.jinja` is recognised by what it renders, and their `config.json` and
`generation_config.json` name different end tokens, all of which end a drafted turn.

A folder that cannot be a simulator (no weights, or a `userlm train` run that did not
finish) and a prompt longer than the model's context are one sentence each, before any
generation starts.
"""

from __future__ import annotations

from pathlib import Path

import torch

from userlm.errors import UserError
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import FlippedTemplate, get_template, template_of
from userlm.train.outputs import unfinished_run_message

DEFAULT_NAME = "default"
MODEL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():  # float16 on GPUs without bf16 (V100, T4), where bf16 runs emulated
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.device("cpu"), torch.float32


def load_model_and_tokenizer(path: str | Path, *, adapter: str | Path | None = None):
    """(model, tokenizer) from any supported checkpoint, in eval mode on the best device.

    `path` may be "default" (the embedded SmolLM2), a `.gguf` file, a model folder, or a
    PEFT adapter folder; `adapter` adds a LoRA adapter folder on top of the model at `path`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = device_and_dtype()
    if str(path) == DEFAULT_NAME:
        from userlm.defaults import default_model_dir

        path = default_model_dir()
    path = Path(path)
    check_checkpoint(path)
    if adapter is None and (path / "adapter_config.json").exists():
        # A `userlm train` LoRA output: the adapter folder names its base model.
        adapter = path
        path = base_folder(path)
        check_checkpoint(path)
    if adapter is not None:
        check_checkpoint(Path(adapter))

    if path.suffix == ".gguf":
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)

    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if (adapter / "tokenizer_config.json").exists():
            # The adapter's tokenizer carries the flipped template and the end marker.
            tokenizer = AutoTokenizer.from_pretrained(adapter)
        # Grow only, as training does: a base with spare (padded) rows keeps its size. The adapter's
        # trained rows replace the new ones, so transformers' mean-based start (and its warning) is moot.
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        # Merged once at load: generation then runs at the speed of a plain model.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device).eval()
    return model, tokenizer


def base_folder(adapter: Path) -> Path:
    """The local folder of the base an adapter names (train/base_model.py): the embedded default by its
    public id, a folder, or a hub id, from the Hugging Face cache or the hub where it is online."""
    from huggingface_hub import snapshot_download

    from userlm.train.base_model import adapter_base

    base = adapter_base(adapter)
    if base == DEFAULT_NAME:
        from userlm.defaults import default_model_dir

        return default_model_dir()
    if Path(base).exists():
        return Path(base)
    try:
        # What loading needs, not the repository's other copies of the weights (Llama's original/).
        return Path(snapshot_download(base, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except (OSError, ValueError):
        raise UserError(
            f"The adapter at {adapter} names base model {base!r}, which is neither a local folder nor a model "
            "the hub gives here; pass the base with --simulator and the adapter with --adapter."
        ) from None


def check_checkpoint(path: Path) -> None:
    """One sentence for what cannot be loaded: a missing path, an unfinished `userlm train`
    output, or a model folder without weights."""
    if not path.exists():
        raise UserError(
            f"No simulator checkpoint at {path}; pass a `userlm train` output folder, a model folder or a .gguf file."
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(
                f"{path} is a file but not a .gguf model; pass a model folder, a "
                "`userlm train` output folder or a .gguf file."
            )
        return
    unfinished = unfinished_run_message(path)
    if unfinished is not None:
        raise UserError(unfinished)
    is_adapter = (path / "adapter_config.json").exists()
    if any((path / name).exists() for name in (ADAPTER_WEIGHTS if is_adapter else MODEL_WEIGHTS)) or any(
        path.glob("*.safetensors")
    ):
        return
    checkpoints = sorted((p for p in path.glob("checkpoint-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if checkpoints:
        raise UserError(
            f"{path} holds training checkpoints but no final model: the "
            "`userlm train` run that wrote it did not finish; "
            f"resume it with resume_from_checkpoint=auto, or load a checkpoint folder such as {checkpoints[-1]} itself."
        )
    kind, expected = ("adapter folder", ADAPTER_WEIGHTS[0]) if is_adapter else ("model folder", MODEL_WEIGHTS[0])
    raise UserError(f"The {kind} {path} has no weights (no {expected}); point to a folder that was saved in full.")


def context_length(model_config, tokenizer) -> int | None:
    """Tokens the model can attend to: its position limit, or the tokenizer's if smaller (None if neither says)."""
    limits = [
        getattr(model_config.get_text_config(), "max_position_embeddings", None) if model_config is not None else None,
        tokenizer.model_max_length,
    ]
    # Tokenizers that set no limit report a huge sentinel (1e30).
    usable = [n for n in limits if isinstance(n, int) and 0 < n < 10**8]
    return min(usable) if usable else None


def context_error(prompt_tokens: int, max_new_tokens: int, context: int | None) -> UserError | None:
    """The one sentence for a prompt that, with room for the reply, does not fit the context (None if it fits)."""
    if context is None or prompt_tokens + max_new_tokens <= context:
        return None
    return UserError(
        f"The conversation is {prompt_tokens:,} tokens and the simulator's context is {context:,} "
        f"(with {max_new_tokens} kept for the reply); shorten the intent, persona or history, or lower max_new_tokens."
    )


def turn_end_ids(tokenizer, template: FlippedTemplate, *configs) -> list[int]:
    """Token ids that end a drafted turn: the template's end-of-turn token, the end marker, and
    every EOS that the tokenizer and the checkpoint's configs name (UserLM-8b's config.json says
    `<|end_of_text|>`, its generation_config.json `<|eot_id|>`)."""
    ids = [
        tokenizer.convert_tokens_to_ids(template.eot_token),
        tokenizer.get_vocab().get(END_MARKER),
        tokenizer.eos_token_id,
    ]
    for config in configs:
        eos = getattr(config, "eos_token_id", None) if config is not None else None
        ids += eos if isinstance(eos, (list, tuple)) else [eos]
    return list(dict.fromkeys(i for i in ids if isinstance(i, int) and i >= 0))


def resolve_template(tokenizer, template: str | None, path: str | Path) -> FlippedTemplate:
    """The checkpoint's own flipped template, or the named one for an ordinary instruct model."""
    if template is not None:
        try:
            return get_template(template)
        except ValueError as error:
            raise UserError(str(error)) from None
    if str(path) == DEFAULT_NAME:
        # The embedded SmolLM2 is an ordinary ChatML instruct model: the prompted baseline.
        return get_template("chatml")
    try:
        return template_of(tokenizer)
    except ValueError:
        raise UserError(
            f"The checkpoint at {path} has no userlm flipped template; train it with `userlm train`, "
            "or name a template (e.g. --template chatml) to use an ordinary instruct model as a prompted simulator."
        ) from None

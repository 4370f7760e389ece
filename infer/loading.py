"""Loading a simulator: a `userlm train` folder (full or LoRA adapter), a base plus an
adapter, a merged model, the embedded default, or a GGUF file.

The checkpoint layout is the train stage's contract: the tokenizer, with the flipped
template as its `chat_template` and `<|endconversation|>` in its vocabulary, is always
saved in the output folder; a LoRA output is a PEFT adapter folder whose
`adapter_config.json` names the base.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from userlm.data_prep.templates import FlippedTemplate, get_template, template_of
from userlm.errors import UserError

DEFAULT_NAME = "default"


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
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
    if not path.exists():
        raise UserError(f"No simulator checkpoint at {path}; pass a `userlm train` output folder, a model folder or a .gguf file.")
    if adapter is None and (path / "adapter_config.json").exists():
        # A `userlm train` LoRA output: the adapter folder names its base model.
        adapter = path
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        if not base or not Path(base).exists():
            raise UserError(f"The adapter at {path} names base model {base!r}, which is not a local folder; pass the base with --simulator and the adapter with --adapter.")
        path = Path(base)

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
        # Grow only, as training does: a base with spare (padded) rows keeps its size.
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        # Merged once at load: generation then runs at the speed of a plain model.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device).eval()
    return model, tokenizer


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

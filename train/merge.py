"""`userlm merge`: fold a LoRA/QLoRA adapter into an unquantised base (docs/design.md#resume-distribution-and-merge).

The base is always reloaded in full precision (bf16 by default), never 4-bit: merging
into NF4 weights would round the update away, so a QLoRA adapter is "dequantised" by
merging into the original unquantised weights it was trained against. The result is a
plain `save_pretrained` folder with the adapter's tokenizer (end marker, flipped
template), loadable without PEFT and servable by vLLM (whose LoRA path cannot carry new
vocabulary). It is built beside `out` and swapped in whole.
"""

from __future__ import annotations

from pathlib import Path

from userlm.atomic import replace_folder, share_files, staging_folder
from userlm.errors import UserError


def merge_adapter(adapter: str | Path, out: str | Path, *, base: str | None = None, dtype: str = "bfloat16") -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .base_model import adapter_base
    from .card import merged_card, write_card
    from .outputs import unfinished_run_message
    from .sft import model_folder
    from .vocab import resize_embeddings

    adapter, out = Path(adapter), Path(out)
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(
            f"{adapter} is not an adapter folder (no adapter_config.json); pass the output_dir of a lora or qlora run."
        )
    unfinished = unfinished_run_message(adapter)
    if unfinished:
        raise UserError(unfinished)
    named = base or adapter_base(adapter)
    base = model_folder(named)
    for name, source in (("adapter", adapter), ("base model", Path(base))):
        if source.exists() and (out.resolve() == source.resolve() or source.resolve() in out.resolve().parents):
            raise UserError(
                f"--out {out} is {'inside ' if out.resolve() != source.resolve() else ''}the {name} "
                f"{source}, which the merge would overwrite; choose another --out folder."
            )

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
    resize_embeddings(model, tokenizer)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()

    staging = staging_folder(out)
    merged.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_card(staging, merged_card(adapter, out, named, tokenizer, dtype))
    share_files(staging)
    return replace_folder(staging, out)

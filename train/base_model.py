"""How a checkpoint names its base model (issue 27): portably when written, resolvably when read.

A checkpoint must not name a path outside itself, so the base is recorded by a public id
where one is known: the embedded default's (`HuggingFaceTB/SmolLM2-135M-Instruct`), the hub
id the recipe gave, or the id a Hugging Face cache folder was downloaded from. A local
folder with no known id is recorded as the recipe named it: nothing else could find it.
Reading, the default's id is the embedded rebuild, the weights such an adapter was trained
against, so a copied adapter loads offline wherever userlm-kit is installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from userlm.defaults import SMOLLM2_ID, cache_dir

DEFAULT_NAME = "default"
# A snapshot folder of the Hugging Face cache: .../models--ORG--NAME/snapshots/REVISION
HUB_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/[^/]+/?$")


def public_id(name: str) -> str | None:
    """The public model id of `name` (the word `default`, a hub id, or a folder), or None where none is known."""
    if name == DEFAULT_NAME:
        return SMOLLM2_ID
    path = Path(name).expanduser()
    if not path.exists():
        return name if not path.is_absolute() else None  # a hub id
    resolved = path.resolve()
    if resolved == (cache_dir() / SMOLLM2_ID.split("/")[1]).resolve():
        return SMOLLM2_ID
    found = HUB_SNAPSHOT.search(resolved.as_posix())
    return f"{found['org']}/{found['name']}" if found else None


def recorded_name(name: str) -> str:
    """What a checkpoint records as its base: its public id, else the name as given."""
    return public_id(name) or name


def adapter_base(adapter: str | Path) -> str:
    """The base an adapter folder names, with the embedded default's id read as `default`."""
    base = json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
    return DEFAULT_NAME if base == SMOLLM2_ID else base

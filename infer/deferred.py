"""A local model known by its settings before it loads, and loaded on first use, so that a rerun
that reuses every conversation (`userlm test` re-checking a threshold) loads no model at all.

The settings are what conversation ids hash; they come from the config and, for a simulator
whose checkpoint names its own flipped template, from its tokenizer alone. Once the model
loads, its own settings must match them: a record never names a setting it was not made with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .loading import DEFAULT_NAME, resolve_template


class Deferred:
    def __init__(self, settings: dict, load: Callable):
        self.settings = settings
        self._load = load
        self._loaded = None

    def __getattr__(self, name: str):
        if self._loaded is None:
            self._loaded = self._load()
            if self._loaded.settings != self.settings:
                raise RuntimeError(
                    f"The loaded model's settings {self._loaded.settings} are not the expected {self.settings}."
                )
        return getattr(self._loaded, name)

    async def aclose(self) -> None:
        if self._loaded is not None and hasattr(self._loaded, "aclose"):
            await self._loaded.aclose()


def local_simulator_settings(name: str, path: str, template: str | None, adapter: Path | None) -> dict | None:
    """What `UserSimulator.settings` will say, from the tokenizer alone; None
    where only loading tells (a .gguf file)."""
    if template is None and path != DEFAULT_NAME:
        if path.endswith(".gguf") or not Path(path).is_dir():
            return None
        from transformers import AutoTokenizer

        # The adapter's tokenizer carries the flipped template when it has one, as loading reads it.
        folder = adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists() else path
        return {
            "backend": "local",
            "simulator": name,
            "template": resolve_template(AutoTokenizer.from_pretrained(folder), None, path).name,
        }
    return {"backend": "local", "simulator": name, "template": resolve_template(None, template, path).name}

"""Warnings a user can do nothing about, silenced once for every command and the Python API.

Each entry names a message that libraries print on an ordinary run of this toolkit and
that no setting of ours or the user's removes. Anything else still shows.
"""

from __future__ import annotations

import logging
import warnings

# (logger name, text in the message): on a CPU with AVX-512 BF16, bitsandbytes looks for an
# optional kernel package from the hub on every import, and `kernels` says it skips its trust
# check offline; DeepSpeed announces the CPU accelerator it picks on a machine without GPUs.
LOG_MESSAGES = (
    ("bitsandbytes.backends.cpu.ops", "kernels-community"),
    ("kernels._internals.hf_hub", "kernels-community"),
    ("DeepSpeed", "Setting accelerator to CPU"),
)
# Regular expressions of warnings raised inside the libraries, not by anything we call.
WARNING_MESSAGES = (
    r"'pin_memory' argument is set as true but no accelerator is found",
    r"`is_gradient_checkpointing` is deprecated",
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def silence_unactionable_warnings() -> None:
    for logger, text in LOG_MESSAGES:
        logging.getLogger(logger).addFilter(_DropMessage(text))
    for message in WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message)

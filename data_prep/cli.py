"""`userlm prep CONFIG.yaml [INPUT ...] [key=value ...] [--key value ...]`: a thin shell over `pipeline.prep`."""

from __future__ import annotations

from userlm.config import parse_config
from userlm.errors import UserError
from userlm.summary import print_summary

from .config import PrepConfig
from .pipeline import nothing_kept, prep, prep_summary

DESCRIPTION = (
    "Read chat logs (ShareGPT, WildChat, LMSYS-Chat-1M, OpenAI messages), clean, filter, deduplicate, "
    "add intents (and personas), split by user and write flipped samples."
)


def main(words: list[str]) -> int:
    config = parse_config(PrepConfig, words, prog="userlm prep", description=DESCRIPTION)
    result = prep(config)
    print_summary(prep_summary(result))
    # The output is written (its stats say why it is empty) but a run that kept nothing failed.
    message = nothing_kept(result.stats)
    if message:
        raise UserError(message)
    return 0

"""The config of `userlm synth`: every key of `userlm simulate`, plus what is kept and how it is exported.

    userlm synth --simulator out/simulator --assistant http://127.0.0.1:8000/v1 --assistant-model M \
        --intents intents.txt --personas personas.txt --n-per-intent 4 --out out/synth
    userlm synth synth.yaml --judge.endpoint http://127.0.0.1:8001/v1 --judge.model J --sharegpt
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import SimulateConfig
from ..suite.config import Judge


@dataclass(kw_only=True)
class SynthConfig(SimulateConfig):
    out: Path = field(
        default=Path("out/synth"),
        metadata={
            "help": "output folder (conversations.jsonl, train.jsonl, dataset/, datasheet.md and .json); "
            "a rerun resumes its conversations",
        },
    )
    min_user_turns: int = field(
        default=2,
        metadata={
            "help": "fewest user turns a kept conversation has (the turn that only leaves not counted)",
            "min": 1,
        },
    )
    require_user_ended: bool = field(
        default=True,
        metadata={"help": "keep only conversations the user ended (false keeps those cut at max_turns too)"},
    )
    judge: Judge | None = field(
        default=None,
        metadata={
            "help": "a judge endpoint: only the conversations it says succeeded are kept (`userlm test`'s judge)"
        },
    )
    near_duplicate: float = field(
        default=0.8,
        metadata={
            "help": "MinHash Jaccard similarity (word 3-grams of the whole conversation) at which a conversation is a "
            "near duplicate of a kept one and dropped; 0 drops exact duplicates only",
            "min": 0,
            "max": 1,
        },
    )
    sharegpt: bool = field(
        default=False, metadata={"help": "also write the set as ShareGPT JSON (train.sharegpt.json)"}
    )

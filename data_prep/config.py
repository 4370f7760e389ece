"""`PrepConfig`: every option of `userlm prep`, once. It is at the same time the YAML file,
the command-line flags and the Python API (userlm/config.py does the parsing and checking):

    userlm prep prep.yaml                         # out, inputs, ... in the file
    userlm prep logs.jsonl --out out/prep --languages any --split 0.8,0.1,0.1
    prep(PrepConfig(inputs=[Path("logs.jsonl")], languages=None))

Types and bounds are checked when the config is built; `validate` adds the rules that tie
fields together, so a nonsensical option stops the run before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from userlm.config import Config
from userlm.errors import UserError

from .formats import FORMATS

IntentSource = Literal["heuristic", "llm", "column"]
PersonaSource = Literal["none", "style", "llm", "column"]
ANY_LANGUAGE = ("any", "all")


@dataclass(kw_only=True)
class PrepConfig(Config):
    inputs: list[Path] = field(
        metadata={
            "positional": True,
            "nonempty": True,
            "help": "JSON, JSONL, JSONL.gz, Parquet files or datasets folders of chat logs",
        }
    )
    out: Path = field(default=Path("out/prep"), metadata={"help": "output folder"})
    format: str | None = field(
        default=None,
        metadata={
            "choices": FORMATS,
            "help": f"the log schema, one of {', '.join(FORMATS)} (default: detected per file)",
        },
    )
    languages: list[str] | None = field(
        default_factory=lambda: ["en"],
        metadata={"nonempty": True, "help": "ISO codes of the languages to keep, e.g. en,fr; any keeps every language"},
    )
    keep_toxic: bool = field(default=False, metadata={"help": "keep records the source flagged as toxic"})
    min_user_turns: int = field(default=1, metadata={"min": 1, "help": "fewest user turns a conversation may have"})
    max_user_turns: int | None = field(default=None, metadata={"min": 1, "help": "most user turns (default: no limit)"})
    min_chars: int = field(default=1, metadata={"min": 0, "help": "fewest characters of a whole conversation"})
    max_chars: int | None = field(default=None, metadata={"min": 1, "help": "most characters of a whole conversation"})
    exact_dedup: bool = field(default=True, metadata={"help": "drop conversations whose normalised user text repeats"})
    near_dup_threshold: float = field(
        default=0.9,
        metadata={
            "min": 0,
            "max": 1,
            "help": "MinHash Jaccard similarity at which a conversation is a near duplicate; 0 is off",
        },
    )
    split: tuple[float, float, float] = field(
        default=(0.9, 0.05, 0.05),
        metadata={"min": 0, "max": 1, "help": "train, validation and test shares of the users, summing to 1"},
    )
    intents: IntentSource = field(
        default="heuristic",
        metadata={"help": "where intents come from: heuristic (offline), llm (an endpoint) or column (a field)"},
    )
    intent_column: str | None = field(
        default=None, metadata={"help": "the field holding the intent, for intents: column"}
    )
    scope_dropout: float = field(
        default=0.0,
        metadata={
            "min": 0,
            "max": 1,
            "help": "share of the train split's conversations whose intent leaves out its scope sentence "
            '("You follow up once."), drawn by a hash of the conversation so all '
            "its samples agree: one checkpoint then works "
            "with and without a stated length; validation and test keep theirs",
        },
    )
    intent_endpoint: list[str] | None = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible base URL (…/v1), for intents: llm; key from OPENAI_API_KEY. Several URLs "
            "(comma-separated) are one fleet: LiteLLM's Router spreads the requests over them"
        },
    )
    intent_model: str | None = field(default=None, metadata={"help": "model name at the endpoint, for intents: llm"})
    personas: PersonaSource = field(
        default="none",
        metadata={
            "help": "persona appended to the intent: none, style (measured), llm (an endpoint) or column (a field)"
        },
    )
    persona_column: str | None = field(
        default=None, metadata={"help": "the field holding the persona, for personas: column"}
    )
    persona_filter: str | None = field(
        default=None, metadata={"help": "keep only users whose style matches, e.g. words_per_turn<=12,politeness=rare"}
    )
    persona_endpoint: list[str] | None = field(
        default=None,
        metadata={"help": "for personas: llm, one base URL or several like intent_endpoint (default: intent_endpoint)"},
    )
    persona_model: str | None = field(default=None, metadata={"help": "for personas: llm (default: intent_model)"})
    endpoint_timeout: float = field(default=60.0, metadata={"above": 0, "help": "seconds per endpoint request"})
    endpoint_concurrency: int = field(default=8, metadata={"min": 1, "help": "endpoint requests in flight at once"})
    hf: bool = field(
        default=False,
        metadata={
            "help": "also save the samples as a datasets DatasetDict in OUT/hf/ (an uncompressed copy, several times "
            "the size of the compressed samples)"
        },
    )
    num_proc: int | None = field(
        default=None, metadata={"min": 1, "help": "worker processes (default: one per usable CPU core)"}
    )
    chunk_mb: float = field(
        default=16.0,
        metadata={
            "above": 0,
            "help": "MB of input per unit of work: what a worker holds at once, and what a resumed run skips",
        },
    )
    progress: bool = field(
        default=True, metadata={"help": "show progress bars (conversations per second, memory in use)"}
    )

    def validate(self) -> None:
        for path in self.inputs:
            if not Path(path).exists():
                raise UserError(f"The input {path} does not exist; check the path.")
        if self.languages is not None:
            self.languages = languages_to_keep(self.languages)
        for name, low, high in (
            ("user turns", self.min_user_turns, self.max_user_turns),
            ("characters", self.min_chars, self.max_chars),
        ):
            if high is not None and high < low:
                raise UserError(f"The {name} bounds make no sense (min {low}, max {high}); use min <= max.")
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise UserError(f"The split shares {list(self.split)} must sum to 1, e.g. 0.9,0.05,0.05.")
        if self.intents == "column" and not self.intent_column:
            raise UserError(
                "`intents: column` needs `intent_column`, the field that holds the intent (--intent-column NAME)."
            )
        if self.intents == "llm" and not (self.intent_endpoint and self.intent_model):
            raise UserError(
                "`intents: llm` needs `intent_endpoint` and `intent_model` (--intent-endpoint URL --intent-model NAME)."
            )
        if self.personas == "column" and not self.persona_column:
            raise UserError(
                "`personas: column` needs `persona_column`, the field that holds the persona (--persona-column NAME)."
            )
        if self.personas == "llm" and not (self.persona_endpoint_url and self.persona_model_name):
            raise UserError(
                "`personas: llm` needs an endpoint: `persona_endpoint` and `persona_model` (or the intent ones)."
            )
        if self.persona_filter:
            from userlm.flipped.style import parse_filter

            parse_filter(self.persona_filter)  # a bad expression stops the run before any work

    @property
    def persona_endpoint_url(self) -> list[str] | None:
        return self.persona_endpoint or self.intent_endpoint

    @property
    def persona_model_name(self) -> str | None:
        return self.persona_model or self.intent_model


def languages_to_keep(codes: list[str]) -> list[str] | None:
    """Lowercased ISO codes, or None (keep every language) for `any`."""
    codes = [code.strip().lower() for code in codes if code.strip()]
    if any(code in ANY_LANGUAGE for code in codes):
        if len(codes) > 1:
            raise UserError(f"`languages` {codes} mixes codes with `any`; give ISO codes such as en,fr, or any alone.")
        return None
    if not codes:
        raise UserError("`languages` must not be empty; give ISO codes such as en,fr, or any.")
    return codes

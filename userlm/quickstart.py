"""`userlm quickstart`: the whole pipeline on the embedded default, read top to bottom.

Real ShareGPT logs -> flipped samples -> a SmolLM2 LoRA simulator -> simulated
conversations against SmolLM2 -> the paper's metrics, fine-tuned against prompted base.

Its sizes live in `recipes/quickstart.yaml` (shipped in the package): one section per
stage, holding that stage's own config keys. This file only chains the stages: it fills
in the paths that pass one stage's output to the next.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from userlm.config import Config, checked_kwargs, parse_config, read_yaml, shipped_config


def shipped_section(name: str) -> dict:
    return dict(read_yaml(shipped_config("quickstart"))[name])


@dataclass(kw_only=True)
class QuickstartConfig(Config):
    out: Path = field(default=Path("out/quickstart"), metadata={"help": "work folder for every stage's output"})
    prep: dict = field(default_factory=lambda: shipped_section("prep"), metadata={"help": "`userlm prep` keys"})
    train: dict = field(default_factory=lambda: shipped_section("train"),
                        metadata={"help": "`recipe:` (a shipped name or a path) and keys overriding it"})
    simulate: dict = field(default_factory=lambda: shipped_section("simulate"), metadata={"help": "`userlm simulate` keys"})
    eval: dict = field(default_factory=lambda: shipped_section("eval"), metadata={"help": "`userlm eval` keys"})


def main(words: list[str]) -> int:
    config = parse_config(
        QuickstartConfig, words, prog="userlm quickstart", find_config=shipped_config,
        description="Prepare the bundled ShareGPT logs, train a SmolLM2 LoRA user simulator, simulate conversations "
        "with it and evaluate it against the prompted base model. Sizes: recipes/quickstart.yaml.",
    )
    quickstart(config)
    return 0


def override_words(values: dict) -> list[str]:
    """key=value words for a recipe (text as is, anything else as JSON, which YAML reads back)."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in values.items()]


def quickstart(config: QuickstartConfig) -> dict:
    from rich.console import Console

    from userlm.data_prep.config import PrepConfig
    from userlm.data_prep.pipeline import prep, prep_summary
    from userlm.defaults import sharegpt_path
    from userlm.evaluation.config import EvalConfig
    from userlm.evaluation.evaluate import evaluate
    from userlm.infer.config import SimulateConfig
    from userlm.infer.simulate import print_transcript, run_simulation, simulation_summary
    from userlm.summary import Summary, print_summary
    from userlm.train.config import load_recipe
    from userlm.train.sft import train, train_summary

    work = Path(config.out)
    prep_dir, simulator_dir = work / "prep", work / "simulator"
    simulations, eval_dir = work / "simulations.jsonl", work / "eval"
    train_section = dict(config.train)
    recipe = train_section.pop("recipe", "smollm2-cpu-quickstart")
    # The stages' own configs, with the paths that chain them. Each is checked now, before any work.
    prep_keys = checked_kwargs(PrepConfig, {**config.prep, "inputs": [str(sharegpt_path())], "out": str(prep_dir)})
    train_words = override_words({**train_section, "dataset_path": str(prep_dir), "output_dir": str(simulator_dir)})
    train_config = load_recipe(recipe, train_words)
    simulate_keys = checked_kwargs(SimulateConfig, {**config.simulate, "simulator": str(simulator_dir), "out": str(simulations)})
    eval_keys = checked_kwargs(EvalConfig, {
        **config.eval,
        "checkpoints": ["prompted-base=default@chatml", f"simulator={simulator_dir}"],
        "data": str(prep_dir / "test.jsonl"),  # what prep writes; `data_prep.samples` knows the layout
        "out": str(eval_dir),
    })

    console = Console()
    seconds: dict[str, float] = {}
    started = time.monotonic()

    def step(number: int, title: str) -> None:
        seconds[title] = time.monotonic()
        console.rule(f"[bold]{number}/4 {title}")

    step(1, "prep: bundled ShareGPT logs -> flipped samples")
    prepared = prep(PrepConfig(**prep_keys))
    print_summary(prep_summary(prepared))

    step(2, "train: a SmolLM2 LoRA user simulator")
    trained = train(train_config)
    print_summary(train_summary(trained))

    step(3, "simulate: the simulator against SmolLM2 as the assistant")
    simulated = run_simulation(SimulateConfig(**simulate_keys))
    records = [json.loads(line) for line in simulations.read_text().splitlines() if line.strip()]
    if records:
        print_transcript(max(records, key=lambda r: len(r["turns"])))
    print_summary(simulation_summary(simulated))

    step(4, "eval: the fine-tuned simulator against the prompted base")
    evaluated = evaluate(EvalConfig(**eval_keys))

    finished = time.monotonic()
    starts = list(seconds.values()) + [finished]
    rows = [(title, f"{(end - start) / 60:.1f}") for title, start, end in zip(seconds, starts, starts[1:])]
    rows.append(("total", f"{(finished - started) / 60:.1f}"))
    print_summary(Summary(
        title="userlm quickstart", columns=("step", "minutes"), rows=rows,
        wrote={"prepared data": prep_dir, "simulator": simulator_dir, "simulations": simulations,
               "evaluation": eval_dir / "report.html"},
    ))
    return {"prep": prepared, "train": trained, "simulate": simulated, "eval": evaluated}

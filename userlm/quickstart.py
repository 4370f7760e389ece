"""`userlm quickstart`: the whole pipeline on the embedded default, read top to bottom.

Real ShareGPT logs -> flipped samples -> a SmolLM2 LoRA simulator -> simulated
conversations against SmolLM2 -> the paper's metrics, fine-tuned against prompted base.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="run the whole pipeline on the embedded default (ShareGPT + SmolLM2) on a CPU",
        description="Prepare the bundled ShareGPT logs, train a SmolLM2 LoRA user simulator, simulate "
        "conversations with it and evaluate it against the prompted base model.",
    )
    parser.add_argument("--out", type=Path, default=Path("out/quickstart"), help="work folder (default: out/quickstart)")
    parser.set_defaults(run=run)


def run(args) -> int:
    quickstart(args.out)
    return 0


def quickstart(work_dir: Path) -> dict:
    from userlm.data_prep.pipeline import run_quickstart_prep
    from userlm.defaults import default_model_dir
    from userlm.evaluation.evaluate import quickstart_eval
    from userlm.infer.quickstart import quickstart_simulate
    from userlm.train.quickstart import quickstart_train

    console = Console()
    work_dir = Path(work_dir)
    timings = {}

    def step(number: int, title: str) -> None:
        timings[title] = time.monotonic()
        console.rule(f"[bold]{number}/4 {title}")

    started = time.monotonic()
    step(1, "prep: bundled ShareGPT logs -> flipped samples")
    prep = run_quickstart_prep(work_dir / "prep")

    step(2, "train: a SmolLM2 LoRA user simulator")
    simulator_dir = work_dir / "simulator"
    training = quickstart_train(prep.out_dir, simulator_dir)

    step(3, "simulate: 8 conversations against SmolLM2 as the assistant")
    simulations = work_dir / "simulations.jsonl"
    simulation = quickstart_simulate(simulator_dir, simulations)

    step(4, "eval: the fine-tuned simulator against the prompted base")
    evaluation = quickstart_eval(simulator_dir, default_model_dir(), prep.out_dir / "test.jsonl", work_dir / "eval")

    minutes = (time.monotonic() - started) / 60
    console.rule(f"[bold]quickstart done in {minutes:.1f} min")
    console.print(f"prepared data:  {prep.out_dir}")
    console.print(f"simulator:      {simulator_dir}")
    console.print(f"simulations:    {simulations}")
    console.print(f"evaluation:     {work_dir / 'eval' / 'report.html'}")
    return {"prep": prep, "train": training, "simulate": simulation, "eval": evaluation}

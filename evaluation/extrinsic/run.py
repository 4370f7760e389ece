"""`userlm extrinsic`: the paper's reality check. Tasks with a checker become intents; each is
simulated `n_per_intent` times under every simulator given, against one assistant; the
assistant's final answer is checked, and the report gives per simulator, with 95% intervals,
the assistant's success rate, the user turns and their variance, intent coverage and the
unigram difference between simulations of one intent (`figures.py` defines them).

The simulations go through `userlm simulate` (`infer/simulate.py`, its config API), one
conversations file per simulator in the output folder, so a rerun resumes them. The output folder:

    conversations-NAME.jsonl  each simulator's conversations, in the schema of `userlm simulate`
    results.json              the figures, the settings and each conversation's check; written last
    report.md                 the table of figures, and how each was measured
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from userlm.atomic import atomic_write, write_json
from userlm.config import parse_config, to_dict
from userlm.errors import UserError
from userlm.evaluation.intervals import difference
from userlm.infer.config import SimulateConfig
from userlm.infer.simulate import run_simulation
from userlm.infer.simulate_output import check_writable, latest_records
from userlm.summary import Summary, print_summary

from .config import ExtrinsicConfig, SimulatorEntry
from .figures import BROKEN, simulator_figures
from .tasks import load_tasks, run_check

RESULTS, REPORT = "results.json", "report.md"
CONVERSATIONS = re.compile(r"^\.?conversations-.+\.jsonl")
FIGURES = (
    ("success_rate", "success %", 1),
    ("user_turns", "user turns", 2),
    ("turn_variance", "turn variance", 2),
    ("intent_coverage", "intent coverage %", 1),
    ("unigram_difference", "unigram difference", 2),
)


def main(words: list[str]) -> int:
    config = parse_config(
        ExtrinsicConfig,
        words,
        prog="userlm extrinsic",
        description=(
            "The paper's reality check: tasks with a checker simulated under each simulator against one assistant; "
            "the assistant's success rate, turns, intent coverage and unigram difference per simulator."
        ),
    )
    print_summary(extrinsic_summary(run_extrinsic(config)))
    return 0


def run_extrinsic(config: ExtrinsicConfig) -> dict:
    """Simulate, check, measure and write the outputs; returns what results.json holds."""
    started = time.monotonic()
    tasks = load_tasks(
        config.tasks,
        limit=config.limit,
        checker=config.checker,
        time_limit=config.time_limit,
        memory_mb=config.memory_mb,
    )
    out = Path(config.out)
    check_folder(out)
    (out / RESULTS).unlink(missing_ok=True)  # an interrupted run never shows the last run's results as its own
    by_intent = {task["intent"]: task for task in tasks}
    simulators = {}
    for entry in config.simulators:
        records = simulate(config, entry, [task["intent"] for task in tasks], out / f"conversations-{entry.name}.jsonl")
        checks = check_all(records, by_intent, progress=config.progress, name=entry.name)
        simulators[entry.name] = {
            "settings": to_dict(entry),
            "figures": simulator_figures(records, checks, by_intent, seed=config.seed),
            "checks": {
                r["conversation_id"]: {"task_id": by_intent[r["intent"]]["task_id"], **checks[r["conversation_id"]]}
                for r in records
            },
        }
    first, *others = simulators
    for name in others:
        simulators[name]["success_rate_minus_first"] = difference(
            simulators[name]["figures"]["success_rate"], simulators[first]["figures"]["success_rate"], seed=config.seed
        )
    result = {
        "kind": "userlm extrinsic",
        "tasks": {"source": config.tasks, "count": len(tasks), "task_ids": [t["task_id"] for t in tasks]},
        "simulators": simulators,
        "config": to_dict(config),
        "seconds": round(time.monotonic() - started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {"report": str(out / REPORT), "results": str(out / RESULTS)},
    }
    atomic_write(out / REPORT, report_markdown(result))
    write_json(out / RESULTS, result)  # last: its presence marks a finished run
    return result


def check_folder(out: Path) -> None:
    """The output folder must be new, empty or an earlier run's: nothing else in it is ever touched."""
    if out.exists() and not out.is_dir():
        raise UserError(f"The output {out} is a file; give a folder for the extrinsic run's outputs.")
    check_writable(out / RESULTS)
    foreign = sorted(
        p.name
        for p in out.iterdir()
        if not (CONVERSATIONS.match(p.name) or p.name.lstrip(".").startswith((RESULTS, REPORT)))
    )
    if foreign:
        raise UserError(
            f"The output folder {out} holds files that are not a `userlm extrinsic` output ({foreign[0]}); "
            "choose a new or empty folder."
        )


def simulate(config: ExtrinsicConfig, entry: SimulatorEntry, intents: list[str], path: Path) -> list[dict]:
    """This simulator's conversations of every intent, through `userlm simulate`'s config API."""
    keys = {f.name for f in dataclasses.fields(SimulateConfig) if f.init}
    values = {
        **{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in keys},
        **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry) if f.name in keys},
    }
    summary = run_simulation(SimulateConfig(**{**values, "intents": intents, "personas": None, "out": path}))
    stored = latest_records(path)
    return [stored[i] for i in summary["conversation_ids"]]


def check_all(records: list[dict], tasks: dict[str, dict], *, progress: bool, name: str) -> dict[str, dict]:
    """Each conversation's check; those a component broke are not checked. The checks run in
    parallel threads, each HumanEval check a child process of its own."""
    broken = {"passed": None, "detail": "not checked: the conversation broke"}
    wanted = [r for r in records if r["termination_reason"] not in BROKEN]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        verdicts = list(
            tqdm(
                pool.map(lambda r: run_check(tasks[r["intent"]], r["turns"]), wanted),
                total=len(wanted),
                desc=f"checks ({name})",
                unit="conv",
                disable=not progress,
            )
        )
    checks = {r["conversation_id"]: broken for r in records}
    checks.update({r["conversation_id"]: verdict for r, verdict in zip(wanted, verdicts)})
    return checks


def figure_text(entry: dict | None, digits: int) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    ci = entry.get("ci")
    return f"{entry['value']:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def table_rows(result: dict) -> list[list[str]]:
    rows = []
    for name, simulator in result["simulators"].items():
        figures = simulator["figures"]
        rows.append(
            [
                name,
                str(figures["conversations"]),
                *(figure_text(figures[key], digits) for key, _, digits in FIGURES),
            ]
        )
    return rows


def notes(result: dict) -> list[str]:
    lines = [
        f"{result['tasks']['count']} tasks from {result['tasks']['source']}; 95% intervals resample tasks.",
    ]
    for name, simulator in result["simulators"].items():
        figures = simulator["figures"]
        if figures["broken"] or figures["unchecked"]:
            lines.append(
                f"{name}: {figures['broken']} conversation(s) broken by the simulator or the assistant (left out; a "
                f"rerun retries them), {figures['unchecked']} the checker could not check (see results.json)."
            )
        gap = simulator.get("success_rate_minus_first")
        if gap is not None:
            lines.append(
                f"{name} minus {next(iter(result['simulators']))}: success {gap['value']:+.1f} points"
                + (f" [{gap['ci'][0]:+.1f}, {gap['ci'][1]:+.1f}]" if gap["ci"] else "")
                + (" (shown)" if gap["shown"] else " (not shown at 95%)")
            )
    return lines


def report_markdown(result: dict) -> str:
    headers = ["simulator", "conversations", *(label for _, label, _ in FIGURES)]
    lines = [
        "# userlm extrinsic",
        "",
        f"Assistant: `{result['config']['assistant']}`. Finished {result['finished']} in {result['seconds']} s.",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(row) + " |" for row in table_rows(result)),
        "",
        *(f"- {line}" for line in notes(result)),
        "",
        "Definitions: `userlm.evaluation.extrinsic.figures` (docs/guide/extrinsic.md).",
        "",
    ]
    return "\n".join(lines)


def extrinsic_summary(result: dict) -> Summary:
    return Summary(
        title="userlm extrinsic",
        columns=("simulator", "conv.", *(label for _, label, _ in FIGURES)),
        rows=table_rows(result),
        notes=notes(result),
        wrote=result["files"],
    )

"""`userlm test SUITE.yaml`: simulated users against an assistant under test, with a pass/fail gate.

Every intent runs with every persona, `n_per_intent` conversations each, through the loop
of `userlm simulate` (same record schema, same ids, same resuming). Each conversation gets
an outcome (`suite/outcomes.py`), with a judge's verdict when one is configured
(`suite/judge.py`); the thresholds are checked per suite and per intent (`suite/gate.py`);
and the output folder receives:

    conversations.jsonl   every conversation, in the schema of `userlm simulate`
    junit.xml             one test case per intent, failures with the reason (`suite/junit.py`)
    report.html           tables per intent and persona, every transcript, filters (`suite/report.py`)
    results.json          the figures, the checks and each conversation's outcome; written last,
                          so a folder without it holds a run that did not finish
    judge-cache.sqlite    the judge's answers, never asked twice

A rerun resumes: finished conversations of the same configuration are kept, failed ones
(assistant or simulator errors) are simulated again unless `retry_failed` is off, and
cached verdicts are reused. The command exits 1 when a threshold fails, printing one line
per failed threshold, and 0 when all hold.
"""

from __future__ import annotations

import time
from pathlib import Path

from userlm.atomic import atomic_write, write_json
from userlm.config import parse_config, to_dict
from userlm.errors import UserError
from userlm.summary import Summary, print_summary

from ..simulate import hide_loading_bars, load_assistant, load_simulator, loop_options, make_jobs, simulate
from ..simulate_output import check_output_file, check_writable, latest_records
from .cases import IntentCase, PersonaCase, intent_cases, persona_cases
from .compare import RESULTS, compare, comparison_lines, read_previous
from .config import SuiteConfig
from .gate import check
from .judge import judge_conversations, judge_label
from .junit import JUnitCase, junit_xml
from .outcomes import group_stats, grouped, label, outcome_of
from .report import render_report

CONVERSATIONS, JUNIT, REPORT, JUDGE_CACHE = "conversations.jsonl", "junit.xml", "report.html", "judge-cache.sqlite"
OUTPUTS = (CONVERSATIONS, RESULTS, JUNIT, REPORT, JUDGE_CACHE)


def main(words: list[str]) -> int:
    config = parse_config(
        SuiteConfig,
        words,
        prog="userlm test",
        description=(
            "Run a suite of simulated users against an assistant under test: outcomes per conversation, "
            "a gate on thresholds (exit 1 when one fails), JUnit XML and an HTML report."
        ),
    )
    result = run_suite(config)
    print_summary(suite_summary(result))
    return 0 if result["passed"] else 1


def run_suite(config: SuiteConfig) -> dict:
    """Simulate, judge, gate and write the outputs; returns what results.json holds."""
    started = time.monotonic()
    intents, personas = intent_cases(config), persona_cases(config)
    previous = read_previous(config.compare) if config.compare is not None else None
    out = Path(config.out)
    check_suite_folder(out)
    check_output_file(out / CONVERSATIONS, inputs=(config.intents, config.personas))
    start_run(out, fresh=config.fresh)

    if not config.progress:
        hide_loading_bars()
    # Deferred: a rerun that reuses every conversation loads no model.
    simulator = load_simulator(
        config, timeout=config.timeout, max_retries=config.max_retries, concurrency=config.concurrency, deferred=True
    )
    assistant = load_assistant(config, deferred=True)
    jobs = make_jobs([i.intent for i in intents], [p.persona for p in personas], config.n_per_intent, config.seed)
    simulated = simulate(simulator, assistant, jobs, out / CONVERSATIONS, **loop_options(config, config.sampling()))
    stored = latest_records(out / CONVERSATIONS)
    records = [stored[i] for i in simulated["conversation_ids"]]

    verdicts, judge = {}, None
    if config.judge is not None:
        to_judge = [r for r in records if r["termination_reason"] in ("user_ended", "max_turns")]
        verdicts, asked = judge_conversations(to_judge, config.judge, out / JUDGE_CACHE, progress=config.progress)
        errors = [v["error"] for v in verdicts.values() if "error" in v]
        judge = {
            "label": judge_label(config.judge),
            "asked": asked,
            "judged": len(to_judge),
            "failed": len(errors),
            "last_error": errors[-1] if errors else None,
        }
    intent_name = {i.intent: i.name for i in intents}
    persona_name = {p.persona: p.name for p in personas}
    outcomes = [
        outcome_of(
            r,
            intent_name[r["intent"]],
            persona_name[r["persona"]],
            verdicts.get(r["conversation_id"]),
            config.judge is not None,
        )
        for r in records
    ]
    result = tally(config, intents, personas, outcomes)
    result.update(
        {
            "kind": "userlm test",
            "suite": config.name,
            "signal": signal(judge),
            "judge": judge,
            "simulated": {
                "now": simulated["conversations"],
                "reused": simulated["skipped_already_done"],
                "retried": simulated["retried_failed"],
            },
            "config": to_dict(config),
            "comparison": compare(previous, result["intents"]) if previous is not None else None,
            "files": {name: str(out / name) for name in (REPORT, JUNIT, CONVERSATIONS, RESULTS)},
        }
    )
    result["seconds"] = round(time.monotonic() - started, 1)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write(out / JUNIT, junit_file(result))
    atomic_write(out / REPORT, render_report(result, records))
    write_json(out / RESULTS, result)  # last: its presence marks a finished run
    return result


def check_suite_folder(out: Path) -> None:
    """The output folder must be new, empty or an earlier run's: nothing else in it is ever touched."""
    if out.exists() and not out.is_dir():
        raise UserError(f"The output {out} is a file; give a folder for the suite's outputs.")
    check_writable(out / RESULTS)
    foreign = sorted(p.name for p in out.iterdir() if not any(p.name.startswith((o, f".{o}.")) for o in OUTPUTS))
    if foreign:
        raise UserError(
            f"The output folder {out} holds files that are not a `userlm test` output "
            f"({foreign[0]}); choose a new or empty folder."
        )


def start_run(out: Path, *, fresh: bool) -> None:
    """Take away the finished-run marker first, so an interrupted run never shows the last run's results as its own."""
    for name in (RESULTS, JUNIT, REPORT):
        (out / name).unlink(missing_ok=True)
    if fresh:
        (out / CONVERSATIONS).unlink(missing_ok=True)


def tally(config: SuiteConfig, intents: list[IntentCase], personas: list[PersonaCase], outcomes: list[dict]) -> dict:
    """Figures per intent, per persona and for the suite, and the gate's checks."""
    per_intent = grouped(outcomes, "intent", [i.name for i in intents])
    intent_rows = []
    for case in intents:
        checks = check(f"intent {case.name!r}", case.thresholds, per_intent[case.name])
        intent_rows.append(
            {
                "name": case.name,
                "intent": case.intent,
                "thresholds": to_dict(case.thresholds),
                "stats": per_intent[case.name],
                "checks": checks,
                "passed": all(c["passed"] for c in checks),
            }
        )
    per_persona = grouped(outcomes, "persona", [p.name for p in personas])
    persona_rows = [{"name": p.name, "persona": p.persona, "stats": per_persona[p.name]} for p in personas]
    suite_stats = group_stats(outcomes)
    suite_checks = check("suite", config.thresholds, suite_stats)
    checks = suite_checks + [c for row in intent_rows for c in row["checks"]]
    return {
        "stats": suite_stats,
        "suite_checks": suite_checks,
        "intents": intent_rows,
        "personas": persona_rows,
        "checks": len(checks),
        "failed": [c["line"] for c in checks if not c["passed"]],
        "passed": all(c["passed"] for c in checks),
        "outcomes": outcomes,
    }


def signal(judge: dict | None) -> dict:
    if judge is None:
        return {"kind": "user_ended", "text": "the user leaving before the turn limit (no judge configured)"}
    cached = judge["judged"] - judge["asked"]
    return {
        "kind": "judge",
        "text": f"verdicts of {judge['label']} on the suite's rubric ({judge['asked']} asked, {cached} from the cache)",
    }


def junit_file(result: dict) -> str:
    cases = []
    if result["suite_checks"]:
        failed = [c["line"] for c in result["suite_checks"] if not c["passed"]]
        seconds = sum(o["seconds"] for o in result["outcomes"])
        cases.append(JUnitCase("suite thresholds", failed, output=figures_text(result["stats"]), seconds=seconds))
    for row in result["intents"]:
        failed = [c["line"] for c in row["checks"] if not c["passed"]]
        broken = [o for o in result["outcomes"] if o["intent"] == row["name"] and label(o) != "success"]
        details = "\n".join(failure_text(o) for o in broken)
        seconds = sum(o["seconds"] for o in result["outcomes"] if o["intent"] == row["name"])
        cases.append(
            JUnitCase(row["name"], failed, details=details, output=figures_text(row["stats"]), seconds=seconds)
        )
    properties = {
        "success_signal": result["signal"]["text"],
        "seed": result["config"]["seed"],
        "simulator": result["config"]["simulator"],
        "assistant": result["config"]["assistant"],
    }
    return junit_xml(result["suite"], cases, properties=properties, seconds=result["seconds"])


def failure_text(outcome: dict) -> str:
    why = outcome["verdict"]["reason"] if outcome.get("verdict") else outcome.get("error") or ""
    return (
        f"{label(outcome)}: {outcome['conversation_id']} (persona {outcome['persona']!r}, trial {outcome['trial']}, "
        f"seed {outcome['seed']}): {outcome['termination_reason']} after {outcome['user_turns']} user turns"
        + (f"; {why}" if why else "")
    )


def figures_text(stats: dict) -> str:
    reasons = stats["termination_reasons"]
    turns = "n/a" if stats["mean_user_turns"] is None else f"{stats['mean_user_turns']:.2f}"
    return "\n".join(
        [
            f"conversations: {stats['conversations']} ({stats['not_counted']} not counted: the simulator broke them)",
            f"success rate: {share_text(stats['success_rate'], stats['successes'], stats['judged'])}"
            + (f" ({stats['unjudged']} unjudged)" if stats["unjudged"] else ""),
            f"user ended: {share_text(stats['user_ended_rate'], reasons['user_ended'], stats['counted'])}",
            "assistant errors: "
            f"{share_text(stats['assistant_error_rate'], reasons['assistant_error'], stats['counted'])}",
            f"mean user turns: {turns}",
            "ended: " + ", ".join(f"{reason} {count}" for reason, count in reasons.items() if count),
        ]
    )


def share_text(value: float | None, part: int, whole: int) -> str:
    return "n/a" if value is None else f"{value:.0%} ({part}/{whole})"


def gate_text(checks: list[dict]) -> str:
    if not checks:
        return "-"
    return "pass" if all(c["passed"] for c in checks) else "FAIL"


def suite_summary(result: dict) -> Summary:
    """The closing table: per intent and for the suite, then the signal, the comparison and the gate's lines."""
    rows = []
    for name, stats, checks in [
        *((r["name"], r["stats"], r["checks"]) for r in result["intents"]),
        ("all intents", result["stats"], result["suite_checks"]),
    ]:
        reasons = stats["termination_reasons"]
        turns = "n/a" if stats["mean_user_turns"] is None else f"{stats['mean_user_turns']:.1f}"
        rows.append(
            (
                name,
                stats["conversations"],
                share_text(stats["success_rate"], stats["successes"], stats["judged"]),
                share_text(stats["user_ended_rate"], reasons["user_ended"], stats["counted"]),
                share_text(stats["assistant_error_rate"], reasons["assistant_error"], stats["counted"]),
                turns,
                gate_text(checks),
            )
        )
    simulated = result["simulated"]
    reuse = (
        f"Conversations: {simulated['now']} simulated now, {simulated['reused']} reused from an earlier run of this "
        f"configuration, {simulated['retried']} failed ones retried; {result['stats']['not_counted']} not counted "
        "(the simulator broke them)."
    )
    notes = [f"Success signal: {result['signal']['text']}.", reuse]
    judge = result["judge"]
    if judge and judge["failed"]:  # the cause, here and not only in the report files
        notes.append(
            f"The judge gave no verdict for {judge['failed']} of {judge['judged']} "
            f"conversations; its last error: {judge['last_error']}"
        )
    if result["comparison"] is not None:
        notes += comparison_lines(result["comparison"])
    if result["passed"]:
        notes.append(f"Gate passed: {result['checks']} thresholds checked, all met.")
    else:
        notes += [f"FAILED {line}" for line in result["failed"]]
    return Summary(
        title=f"userlm test: {result['suite']}",
        columns=("intent", "conv.", "success", "user ended", "assistant errors", "mean user turns", "gate"),
        rows=rows,
        notes=notes,
        wrote={
            "report": result["files"][REPORT],
            "junit": result["files"][JUNIT],
            "conversations": result["files"][CONVERSATIONS],
            "results": result["files"][RESULTS],
        },
    )

"""`userlm synth`: synthetic multi-turn conversations for training an assistant.

A user simulator talks with an assistant (any one `userlm simulate` accepts) for every
intent and persona, `n_per_intent` times, through `userlm simulate` itself (its config
API: same records, same ids, same resuming); the conversations are kept by outcome (and
by a judge's verdict where one is configured), exact and near duplicates are dropped
(`filters.py`), and the rest are exported as a training set with its datasheet
(`export.py`). The output folder:

    conversations.jsonl   every simulated conversation, in the schema of `userlm simulate`
    train.jsonl, dataset/ the training set; train.sharegpt.json on request
    judge-cache.sqlite    the judge's answers, never asked twice
    datasheet.md          counts per filter, intents, personas, models, seeds and settings
    datasheet.json        the same and the kept ids; written last, so a folder without it
                          holds a run that did not finish

A rerun with the same keys resumes: finished conversations are kept, failed ones simulated
again, cached verdicts reused, and the filters and exports made anew from all of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from userlm.config import parse_config, to_dict
from userlm.errors import UserError
from userlm.summary import Summary, print_summary

from ..config import SimulateConfig
from ..simulate import run_simulation
from ..simulate_output import check_writable, latest_records
from ..suite.judge import judge_conversations, judge_label
from .config import SynthConfig
from .export import datasheet, write_datasheet, write_training_set
from .filters import filter_conversations

CONVERSATIONS, DATASHEET, JUDGE_CACHE = "conversations.jsonl", "datasheet.json", "judge-cache.sqlite"
OUTPUTS = (CONVERSATIONS, "train.jsonl", "dataset", "train.sharegpt.json", "datasheet.md", DATASHEET, JUDGE_CACHE)


def main(words: list[str]) -> int:
    config = parse_config(
        SynthConfig,
        words,
        prog="userlm synth",
        description=(
            "Synthetic conversations for training an assistant: simulate them, keep them by outcome, drop duplicates, "
            "export chat messages (JSONL, a datasets folder, ShareGPT on request) with a datasheet."
        ),
    )
    print_summary(synth_summary(run_synth(config)))
    return 0


def run_synth(config: SynthConfig) -> dict:
    """Simulate, filter and export; returns the datasheet (with the files written)."""
    out = Path(config.out)
    check_folder(out)
    (out / DATASHEET).unlink(missing_ok=True)  # an interrupted run never shows the last run's datasheet as its own
    simulate_keys = {f.name for f in dataclasses.fields(SimulateConfig) if f.init}
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in simulate_keys}
    summary = run_simulation(SimulateConfig(**{**values, "out": out / CONVERSATIONS}))
    stored = latest_records(out / CONVERSATIONS)
    records = [stored[i] for i in summary["conversation_ids"]]

    judge = None
    if config.judge is not None:

        def judge(to_judge: list[dict]) -> dict[str, dict]:
            return judge_conversations(to_judge, config.judge, out / JUDGE_CACHE, progress=config.progress)[0]

    reasons = filter_conversations(
        records,
        min_user_turns=config.min_user_turns,
        require_user_ended=config.require_user_ended,
        near_duplicate=config.near_duplicate,
        judge=judge,
    )
    kept = [r for r in records if reasons[r["conversation_id"]] is None]
    files = write_training_set(out, kept, sharegpt=config.sharegpt)
    judged = None if config.judge is None else judge_label(config.judge)
    sheet = datasheet(records, reasons, to_dict(config), judged)
    files.update({"datasheet": str(out / "datasheet.md"), "conversations": str(out / CONVERSATIONS)})
    write_datasheet(out, sheet, files)
    return {**sheet, "files": files, "simulated_now": summary["conversations"]}


def check_folder(out: Path) -> None:
    """The output folder must be new, empty or an earlier run's: nothing else in it is ever touched."""
    if out.exists() and not out.is_dir():
        raise UserError(f"The output {out} is a file; give a folder for the synthetic set.")
    check_writable(out / DATASHEET)
    foreign = sorted(p.name for p in out.iterdir() if not p.name.lstrip(".").startswith(OUTPUTS))
    if foreign:
        raise UserError(
            f"The output folder {out} holds files that are not a `userlm synth` output ({foreign[0]}); "
            "choose a new or empty folder."
        )


def synth_summary(sheet: dict) -> Summary:
    rows = [
        ("conversations simulated", sheet["conversations_simulated"]),
        ("simulated by this run", sheet["simulated_now"]),
    ]
    rows += [(f"dropped: {reason}", count) for reason, count in sheet["dropped"].items() if count]
    rows += [("kept", sheet["kept"]), ("messages kept", sheet["messages"])]
    notes = [] if sheet["kept"] else ["No conversation was kept: see the drops above and docs/guide/synth.md."]
    return Summary(title="userlm synth", columns=("", "count"), rows=rows, notes=notes, wrote=sheet["files"])

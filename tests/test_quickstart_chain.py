"""`userlm quickstart` end to end at its smallest sizes: every stage the shipped quickstart has runs
as its own command, each on the previous stages' real outputs, and the chain ends in an
evaluation report.

The sizes: the shipped recipes/quickstart.yaml with the sections this test knows shrunk to a
few records, one training step each and a handful of eval items (a stage this test does not
know keeps its shipped sizes), and the ShareGPT logs cut to their first megabytes (the
quickstart always reads the bundled file: the test points it at that slice, which prep reads as
it reads the whole, its cut-off tail rejected).
"""

from __future__ import annotations

import json

import pytest
import yaml

from userlm.config import parse_config, read_yaml, shipped_config
from userlm.defaults import SHAREGPT_FILE
from userlm.quickstart import QuickstartConfig, quickstart, stages

pytestmark = pytest.mark.slow

LOGS_BYTES = 4_000_000  # about 550 conversations: enough for a persona subset with held-out users
ONE_STEP = {
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "per_device_eval_batch_size": 2,
    "max_train_samples": 4,
    "max_eval_samples": 2,
    "eval_on_start": False,
    "save_steps": 1,
}
SMALLEST = {
    "train": ONE_STEP,
    "persona_train": ONE_STEP,
    "calibrate": {"conversations": 8},
    "simulate": {"assistant_max_tokens": 2, "max_new_tokens": 4, "max_turns": 2, "batch_size": 2},
    "eval": {
        "perplexity_samples": 2,
        "first_turn_intents": 2,
        "termination_conversations": 2,
        "termination_max_new_tokens": 2,
        "end_probability_conversations": 4,
        "scope_conversations": 1,
        "probes_per_kind": 1,
        "diversity_intents": 1,
        "simulations_per_intent": 2,
        "persona_users": 2,
        "persona_turns_per_user": 1,
        "contrast_intents": 1,
        "max_new_tokens": 2,
    },
}


def smallest_quickstart(tmp_path) -> dict:
    """The shipped quickstart's sections with the known ones shrunk; the simulate section keeps two of its intents."""
    sections = read_yaml(shipped_config("quickstart"))
    for name, sizes in SMALLEST.items():
        if name in sections:  # a stage the quickstart no longer has is not added back
            sections[name] = {**sections[name], **sizes}
    sections["simulate"]["intents"] = sections["simulate"]["intents"][:2]
    sections["out"] = str(tmp_path / "work")
    return sections


def test_the_quickstart_chain_runs_end_to_end_at_its_smallest_sizes(tmp_path, monkeypatch, sharegpt_file):
    logs = tmp_path / "logs" / SHAREGPT_FILE
    logs.parent.mkdir()
    with open(sharegpt_file, "rb") as source:
        logs.write_bytes(source.read(LOGS_BYTES))
    monkeypatch.setattr("userlm.defaults.sharegpt_path", lambda: logs)
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(smallest_quickstart(tmp_path)))
    config = parse_config(QuickstartConfig, [str(path)], prog="userlm quickstart", find_config=shipped_config)
    planned = [stage.name for stage in stages(config)]

    result = quickstart(config)

    work = tmp_path / "work"
    # Every stage ran, in order, from the config file it wrote.
    assert list(result["minutes"]) == planned and set(result["configs"]) == set(planned)
    assert all(path.is_file() for path in result["configs"].values())
    prep = json.loads((work / "prep" / "stats.json").read_text())
    assert prep["inputs"][0]["path"] == str(logs) and prep["rejected"]["truncated_record"] == 1
    persona = json.loads((work / "prep-persona" / "stats.json").read_text())
    assert 0 < persona["kept"] < prep["kept"]
    for folder in ("simulator", "persona-simulator"):
        summary = json.loads((work / folder / "train_summary.json").read_text())
        assert summary["global_step"] == 1, folder
        assert not (work / folder / "train_incomplete.json").exists()
    records = [json.loads(line) for line in (work / "simulations.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["assistant"]["kind"] == "hf" for r in records)
    assert (work / "eval" / "report.html").is_file()
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert list(metrics["checkpoints"]) == ["prompted-base", "simulator", "persona-simulator"]

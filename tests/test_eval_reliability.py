"""`userlm eval` against bad input and interruptions (issue 11), each failure reproduced as the
user met it: a data line of the wrong types (a traceback inside the subset drawing before),
inputs longer than a checkpoint's context (the simulator refused them mid-run before), an
`out` that holds an input or someone else's files (replaced or mixed into before), and an
output folder written file by file (an interrupted run left it half old, half new before)."""

from __future__ import annotations

import json
import shutil

import pytest

from userlm.cli import main as userlm_main
from userlm.errors import UserError
from userlm.evaluation import evaluate as evaluate_module
from userlm.evaluation.config import EvalConfig
from userlm.evaluation.evaluate import evaluate

SMALL = dict(
    perplexity_samples=2,
    termination_conversations=2,
    probes_per_kind=1,
    diversity_intents=0,
    max_new_tokens=4,
    termination_max_new_tokens=4,
    persona_users=2,
    contrast_intents=2,
    progress=False,
)

WRONG_TYPES = [
    {
        "prompt": "how do i sort a list",
        "completion": [{"role": "user", "content": "x"}],
        "conversation_id": "w1",
        "turn_index": 0,
        "is_end": False,
    },
    {
        "prompt": [{"role": "system", "content": 42}],
        "completion": [{"role": "user", "content": "x"}],
        "conversation_id": "w2",
        "turn_index": 0,
        "is_end": False,
    },
    {
        "prompt": [{"role": "system", "content": "intent"}],
        "completion": [{"role": "user", "content": ["x"]}],
        "conversation_id": "w3",
        "turn_index": 0,
        "is_end": False,
    },
    {
        "prompt": [{"role": "system", "content": "intent"}],
        "completion": [{"role": "user", "content": "x"}],
        "conversation_id": "w4",
        "turn_index": "0",
        "is_end": False,
    },
    ["not", "an", "object"],
]


def test_data_lines_of_the_wrong_types_are_counted_and_reported(tmp_path, eval_test_file, forced_simulator):
    data = tmp_path / "test.jsonl"
    data.write_text(eval_test_file.read_text() + "".join(json.dumps(line) + "\n" for line in WRONG_TYPES))
    results = evaluate(
        EvalConfig(
            checkpoints=[f"talker={forced_simulator(always_end=False)}"], data=data, out=tmp_path / "report", **SMALL
        )
    )
    assert results["data"]["unusable_lines"] == 5
    assert [(b["line"], b["reason"]) for b in results["data"]["unusable_examples"]] == [
        (n, "not_a_flipped_sample") for n in range(12, 17)
    ]  # after the 11 good lines
    assert [b["detail"] for b in results["data"]["unusable_examples"]] == [
        "prompt is not a non-empty list of {role, content} messages with text contents",
        "prompt is not a non-empty list of {role, content} messages with text contents",
        "completion is not one user message with a text content",
        "turn_index is not a whole number or is_end is not true or false",
        "the line is not a JSON object",
    ]
    assert "5 unusable lines" in (tmp_path / "report" / "report.md").read_text()


def short_context_model(tmp_path, folder, positions: int):
    """A copy of a model folder whose config allows only `positions` tokens."""
    copy = tmp_path / f"context-{positions}"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config["max_position_embeddings"] = positions
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_inputs_longer_than_a_checkpoints_context_are_left_out_and_counted(tmp_path, eval_test_file, forced_simulator):
    short = short_context_model(tmp_path, forced_simulator(always_end=False), 72)
    results = evaluate(
        EvalConfig(
            checkpoints=[f"short={short}", f"full={forced_simulator(always_end=False)}"],
            data=eval_test_file,
            out=tmp_path / "report",
            **SMALL,
        )
    )
    short_result, full = results["checkpoints"]["short"], results["checkpoints"]["full"]
    assert full["left_out_over_context"] == {}
    left_out = short_result["left_out_over_context"]
    # The long conversations' decision points go, whole conversations at a time; the first turns all fit.
    assert left_out.get("end_points", 0) > 0 and "first_turns" not in left_out
    assert short_result["termination_auc"]["n"] == full["termination_auc"]["n"] - left_out["end_points"]
    assert "left out as longer than its context" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("where", ["data file", "data folder", "checkpoint", "someone else's folder", "a file"])
def test_an_out_that_would_overwrite_an_input_or_other_files_is_refused_up_front(
    tmp_path, eval_test_file, forced_simulator, where, capsys
):
    data = tmp_path / "prep" / "test.jsonl"
    data.parent.mkdir()
    shutil.copy(eval_test_file, data)
    checkpoint = tmp_path / "sim"
    shutil.copytree(forced_simulator(always_end=False), checkpoint)
    others = tmp_path / "notes"
    others.mkdir()
    (others / "todo.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    out = {
        "data file": data,
        "data folder": data.parent,
        "checkpoint": checkpoint,
        "someone else's folder": others,
        "a file": tmp_path / "file.txt",
    }[where]
    with pytest.raises(UserError) as error:
        EvalConfig(checkpoints=[f"sim={checkpoint}"], data=data, out=out)
    assert str(error.value).count(".") >= 1 and "\n" not in str(error.value)
    assert userlm_main(["eval", "--checkpoints", f"sim={checkpoint}", "--data", str(data), "--out", str(out)]) == 2
    assert "userlm eval: The output" in capsys.readouterr().err
    # Nothing was touched.
    assert data.read_text() == eval_test_file.read_text() and (others / "todo.txt").read_text() == "mine"
    assert (checkpoint / "config.json").exists() and (tmp_path / "file.txt").read_text() == "mine"


def test_the_output_folder_is_replaced_as_a_whole(tmp_path, eval_test_file, forced_simulator, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text('{"old": true}\n')
    (out / "stale_metric.png").write_bytes(b"old plot")
    config = EvalConfig(
        checkpoints=[f"talker={forced_simulator(always_end=False)}"], data=eval_test_file, out=out, **SMALL
    )

    # Interrupted while writing the report: the earlier output stays whole, and nothing is left beside it.
    def interrupted(results, folder):
        (folder / "metrics.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "write_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config)
    assert json.loads((out / "metrics.json").read_text()) == {"old": True} and (out / "stale_metric.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]

    monkeypatch.undo()
    evaluate(config)
    assert "checkpoints" in json.loads((out / "metrics.json").read_text())
    assert not (out / "stale_metric.png").exists()  # a file of the earlier run does not outlive it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]

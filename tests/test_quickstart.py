"""`userlm quickstart` chains seven stages through their outputs and checks every stage's keys first.

The whole pipeline takes about 12 minutes here (docs/quickstart.md), too long for the suite;
these tests build the stages' configs from the shipped recipes/quickstart.yaml, as the command
does before it runs anything, and check how they are chained and that a bad value stops the
command before its work folder exists.
"""

from __future__ import annotations

import pytest

from userlm.config import parse_config, shipped_config
from userlm.errors import UserError
from userlm.quickstart import QuickstartConfig, quickstart, stages


def planned(tmp_path, *words):
    config = parse_config(
        QuickstartConfig, [f"out={tmp_path / 'work'}", *words], prog="userlm quickstart", find_config=shipped_config
    )
    return {stage.name: stage for stage in stages(config)}, tmp_path / "work"


def test_each_stage_reads_the_outputs_of_the_stages_before_it(tmp_path):
    plan, work = planned(tmp_path)

    assert list(plan) == ["prep", "prep-persona", "train", "train-persona", "calibrate", "simulate", "eval"]
    assert [s.command for s in plan.values()] == ["prep", "prep", "train", "train", "calibrate", "simulate", "eval"]
    prep, persona_prep = plan["prep"].values, plan["prep-persona"].values
    assert prep["out"] == str(work / "prep") and persona_prep["out"] == str(work / "prep-persona")
    assert persona_prep["personas"] == "style" and persona_prep["persona_filter"] == "length=very_short,lowercase=often"
    assert "persona_filter" not in prep
    train, persona = plan["train"].values, plan["train-persona"].values
    assert (train["dataset_path"], train["output_dir"]) == (str(work / "prep"), str(work / "simulator"))
    assert train["init_adapter"] is None
    assert (persona["dataset_path"], persona["init_adapter"]) == (str(work / "prep-persona"), str(work / "simulator"))
    assert persona["output_dir"] == str(work / "persona-simulator")
    # Learning to leave: the quickstart trains with the end-marker keys on.
    assert (train["end_marker_init"], train["new_token_learning_rate"], train["end_sample_repeats"]) == ("eos", 5e-3, 2)
    # Calibration reads the simulator and the prep folder (its validation split); simulate reads its file.
    calibration = plan["calibrate"].values
    assert (calibration["simulator"], calibration["data"]) == (str(work / "simulator"), str(work / "prep"))
    assert calibration["calibration_file"] == str(work / "calibration" / "end_calibration.yaml")
    assert plan["simulate"].values["end_calibration"] == calibration["calibration_file"]
    assert plan["simulate"].values["simulator"] == str(work / "simulator")
    evaluation = plan["eval"].values
    assert evaluation["data"] == str(work / "prep")  # eval reads the prep folder's test split
    assert evaluation["checkpoints"] == [
        "prompted-base=default@chatml",
        f"simulator={work / 'simulator'}",
        f"persona-simulator={work / 'persona-simulator'}",
    ]
    assert evaluation["persona_filter"] == persona_prep["persona_filter"]


def test_a_section_key_overrides_the_recipe_and_the_plan_keeps_it(tmp_path):
    plan, _ = planned(tmp_path, 'train={"recipe": "smollm2-cpu-quickstart", "max_steps": 3}')
    assert plan["train"].values["max_steps"] == 3 and plan["train"].values["learning_rate"] == 5e-4


@pytest.mark.parametrize(
    "words, message",
    [
        (['train={"recipe": "smollm2-cpu-quickstart", "learning_rate": "fast"}'], "must be a number, not 'fast'"),
        (['persona_prep={"persona_filter": ""}'], "The quickstart's persona_prep section needs a persona_filter"),
        (['eval={"batch_size": 0}'], "`batch_size` must be at least 1, not 0."),
    ],
)
def test_a_bad_value_in_any_stage_stops_the_quickstart_before_its_work_folder_exists(words, message, tmp_path):
    config = parse_config(
        QuickstartConfig, [f"out={tmp_path / 'work'}", *words], prog="userlm quickstart", find_config=shipped_config
    )
    with pytest.raises(UserError) as error:
        quickstart(config)
    assert message in str(error.value)
    assert not (tmp_path / "work").exists()

"""Every shipped recipe parses and names files that exist; bad recipes fail with one clear sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from userlm.errors import UserError
from userlm.train.config import RECIPE_KEYS, load_recipe, recipe_from_dict, sft_config_keys

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_the_four_recipes_ship():
    assert {p.name for p in RECIPES} >= {
        "llama31-8b-full-zero3.yaml",
        "userlm8b-lora-persona.yaml",
        "llama31-8b-qlora-1gpu.yaml",
        "smollm2-cpu-quickstart.yaml",
    }


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_is_valid(path):
    recipe = load_recipe(path)
    assert set(recipe.sft) <= sft_config_keys()
    if "deepspeed" in recipe.sft:
        config = json.loads(Path(recipe.sft["deepspeed"]).read_text())
        assert config["zero_optimization"]["stage"] in (2, 3)
    # Hub ids are fetched at run time; a local model path must exist now.
    if not recipe.model_name_or_path.count("/") == 1 or Path(recipe.model_name_or_path).is_absolute():
        assert Path(recipe.model_name_or_path, "config.json").is_file()
    # The SFTConfig accepts every value (bf16 off: this machine has no GPU).
    from trl import SFTConfig

    sft = {k: v for k, v in recipe.sft.items() if k not in ("deepspeed", "resume_from_checkpoint")}
    SFTConfig(output_dir=str(Path(recipe.output_dir)), **{**sft, "bf16": False})


def test_paper_recipe_matches_the_paper():
    recipe = load_recipe(REPO / "recipes" / "llama31-8b-full-zero3.yaml")
    assert recipe.method == "full" and recipe.template == "userlm-llama3"
    assert recipe.model_name_or_path == "meta-llama/Llama-3.1-8B"
    sft = recipe.sft
    assert sft["max_length"] == 2048 and sft["learning_rate"] == 2e-5 and sft["bf16"] is True
    assert 8 * sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] == 1024
    assert sft["deepspeed"].endswith("recipes/deepspeed/zero3.json")


def test_quickstart_recipe_uses_the_embedded_default():
    from userlm.defaults import default_model_dir

    recipe = load_recipe(REPO / "recipes" / "smollm2-cpu-quickstart.yaml")
    assert recipe.model_name_or_path == str(default_model_dir())
    assert recipe.template == "chatml"


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json", "zero3_offload.json"])
def test_deepspeed_configs_parse(name):
    config = json.loads((REPO / "recipes" / "deepspeed" / name).read_text())
    assert config["train_micro_batch_size_per_gpu"] == "auto"
    if name == "zero3_offload.json":
        assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def base(tmp_path, **extra):
    return {"model_name_or_path": "default", "dataset_path": str(tmp_path), "template": "chatml", "output_dir": str(tmp_path / "o"), **extra}


def test_unknown_key_is_an_error_that_names_it(tmp_path):
    with pytest.raises(UserError, match="'learnig_rate'"):
        recipe_from_dict(base(tmp_path, learnig_rate=1e-4))
    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: default\ndataset_path: x\ntemplate: chatml\noutput_dir: o\n")
    with pytest.raises(UserError, match="'lora_rank'"):
        load_recipe(path, ["lora_rank=8"])


def test_overrides_are_read_as_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: default\ndataset_path: x\ntemplate: chatml\noutput_dir: o\n")
    recipe = load_recipe(path, ["learning_rate=1e-4", "method=full", "report_to=[wandb]", "max_steps=3", "save_strategy=no"])
    assert recipe.sft == {"learning_rate": 1e-4, "report_to": ["wandb"], "max_steps": 3, "save_strategy": "no"}
    assert recipe.method == "full"
    assert "template" in RECIPE_KEYS


def test_missing_paths_and_values_are_one_clear_sentence(tmp_path, tiny_llama):
    from userlm.train.config import recipe_from_dict
    from userlm.train.sft import build_trainer

    with pytest.raises(UserError, match="sets no 'template'"):
        recipe_from_dict({k: v for k, v in base(tmp_path).items() if k != "template"})
    with pytest.raises(UserError, match="Unknown template 'llama2'"):
        recipe_from_dict(base(tmp_path, template="llama2"))
    with pytest.raises(UserError, match="completion_only_loss"):
        recipe_from_dict(base(tmp_path, completion_only_loss=False))
    with pytest.raises(UserError, match="DeepSpeed config"):
        recipe_from_dict(base(tmp_path, deepspeed="nowhere.json"))
    with pytest.raises(UserError, match="is not a local folder"):
        build_trainer(recipe_from_dict(base(tmp_path, model_name_or_path=str(tmp_path / "no-model"))))
    with pytest.raises(UserError, match="run `userlm prep` first"):
        build_trainer(recipe_from_dict(base(tmp_path, model_name_or_path=str(tiny_llama()), dataset_path=str(tmp_path / "no-data"))))
    with pytest.raises(UserError, match="Recipe .* does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_cli_prints_the_error_without_a_traceback(tmp_path, capsys):
    from userlm.cli import main

    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: default\ndataset_path: x\ntemplate: chatml\noutput_dir: o\nbatch: 4\n")
    assert main(["train", str(path)]) == 2
    assert "Unknown recipe key 'batch'" in capsys.readouterr().err

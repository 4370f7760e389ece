"""Training recipes: every shipped one loads by name and by path; a YAML file, flags and key=value
words give the same TrainConfig; bad keys and values are one sentence before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from userlm.config import from_dict, to_dict
from userlm.errors import UserError
from userlm.train.config import TrainConfig, load_recipe, parse_train_words

REPO = Path(__file__).resolve().parent.parent
# Training recipes: not the quickstart's config nor the shipped eval configs (eval-*.yaml).
RECIPES = sorted(
    p for p in (REPO / "recipes").glob("*.yaml") if p.name != "quickstart.yaml" and not p.name.startswith("eval-")
)


def test_the_six_recipes_ship():
    assert {p.stem for p in RECIPES} == {
        "llama31-8b-full-zero3",
        "userlm8b-lora-persona",
        "llama31-8b-qlora-1gpu",
        "smollm2-cpu-quickstart",
        "smollm2-gpu-quickstart",
        "smollm2-cpu-persona",
    }


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_loads_by_name_and_by_path_and_sftconfig_takes_it(path, tmp_path, monkeypatch):
    from trl import SFTConfig

    by_path = load_recipe(path)
    monkeypatch.chdir(tmp_path)  # an empty folder: the name is found inside the installed package
    by_name = load_recipe(path.stem)
    assert by_name == by_path
    if "deepspeed" in by_name.sft:
        config = json.loads(Path(by_name.sft["deepspeed"]).read_text())
        assert config["zero_optimization"]["stage"] in (2, 3)
    sft = {k: v for k, v in by_name.sft.items() if k != "deepspeed"}
    SFTConfig(output_dir=str(tmp_path / "o"), **{**sft, "bf16": False})  # bf16 off: this machine has no GPU


def test_paper_recipe_matches_the_paper():
    recipe = load_recipe("llama31-8b-full-zero3")
    assert recipe.method == "full" and recipe.template == "userlm-llama3"
    assert recipe.model_name_or_path == "meta-llama/Llama-3.1-8B"
    sft = recipe.sft
    assert sft["max_length"] == 2048 and sft["learning_rate"] == 2e-5 and sft["bf16"] is True
    assert 8 * sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] == 1024
    assert Path(sft["deepspeed"]) == REPO / "recipes" / "deepspeed" / "zero3.json"


def test_quickstart_recipe_trains_the_embedded_default():
    from userlm.defaults import default_model_dir
    from userlm.train.sft import model_folder

    recipe = load_recipe("smollm2-cpu-quickstart")
    assert (recipe.model_name_or_path, recipe.template, recipe.method) == ("default", "chatml", "lora")
    assert model_folder(recipe.model_name_or_path) == str(default_model_dir())


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json", "zero3_offload.json"])
def test_deepspeed_configs_parse(name):
    config = json.loads((REPO / "recipes" / "deepspeed" / name).read_text())
    assert config["train_micro_batch_size_per_gpu"] == "auto"
    if name == "zero3_offload.json":
        assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


RECIPE_YAML = """\
model_name_or_path: some/model
dataset_path: prep
template: userlm-llama3
output_dir: out/run
method: qlora
lora_r: 8
lora_target_modules: [q_proj, v_proj]
trainable_tokens: ["<|eot_id|>"]
end_marker_init: eot
new_token_learning_rate: 1e-3
end_sample_repeats: 2
init_adapter: adapter
max_eval_samples: 16
long_samples: skip
learning_rate: 1e-4
max_steps: 30
warmup_steps: 0.03
bf16: false
eval_strategy: no
report_to: wandb
resume_from_checkpoint: auto
deepspeed: zero2.json
"""

FLAGS = [
    "--model_name_or_path",
    "some/model",
    "--dataset-path",
    "{dir}/prep",
    "--template",
    "userlm-llama3",
    "--output_dir",
    "out/run",
    "--method",
    "qlora",
    "--lora_r",
    "8",
    "--lora_target_modules",
    "q_proj",
    "v_proj",
    "--trainable_tokens",
    "<|eot_id|>",
    "--end_marker_init",
    "eot",
    "--new_token_learning_rate",
    "1e-3",
    "--end_sample_repeats",
    "2",
    "--init_adapter",
    "{dir}/adapter",
    "--max_eval_samples",
    "16",
    "--long_samples",
    "skip",
    "--learning_rate",
    "1e-4",
    "--max_steps",
    "30",
    "--warmup_steps",
    "0.03",
    "--no-bf16",
    "--eval_strategy",
    "no",
    "--report_to",
    "wandb",
    "--resume_from_checkpoint",
    "auto",
    "--deepspeed",
    "{dir}/zero2.json",
]

WORDS = [
    "model_name_or_path=some/model",
    "dataset_path={dir}/prep",
    "template=userlm-llama3",
    "output_dir=out/run",
    "method=qlora",
    "lora_r=8",
    "lora_target_modules=[q_proj, v_proj]",
    "trainable_tokens=[<|eot_id|>]",
    "end_marker_init=eot",
    "new_token_learning_rate=1e-3",
    "end_sample_repeats=2",
    "init_adapter={dir}/adapter",
    "max_eval_samples=16",
    "long_samples=skip",
    "learning_rate=1e-4",
    "max_steps=30",
    "warmup_steps=0.03",
    "bf16=false",
    "eval_strategy=no",
    "report_to=wandb",
    "resume_from_checkpoint=auto",
    "deepspeed={dir}/zero2.json",
]


def test_a_yaml_recipe_its_flags_and_its_words_give_the_same_config(tmp_path, monkeypatch):
    (tmp_path / "prep").mkdir()
    (tmp_path / "adapter").mkdir()
    (tmp_path / "zero2.json").write_text("{}")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE_YAML)
    monkeypatch.chdir(tmp_path.parent)  # relative paths in the recipe are read beside it

    from_yaml = load_recipe(recipe)
    from_flags = parse_train_words([w.format(dir=tmp_path) for w in FLAGS])
    from_words = parse_train_words([w.format(dir=tmp_path) for w in WORDS])

    assert from_yaml == from_flags == from_words
    assert from_yaml.dataset_path == tmp_path / "prep"
    assert from_yaml.lora_target_modules == ["q_proj", "v_proj"] and from_yaml.trainable_tokens == ["<|eot_id|>"]
    assert (from_yaml.end_marker_init, from_yaml.new_token_learning_rate, from_yaml.end_sample_repeats) == (
        "eot",
        1e-3,
        2,
    )
    assert from_yaml.init_adapter == tmp_path / "adapter"
    assert from_yaml.sft == {
        "learning_rate": 1e-4,
        "max_steps": 30,
        "warmup_steps": 0.03,
        "bf16": False,
        "eval_strategy": "no",
        "report_to": ["wandb"],
        "resume_from_checkpoint": "auto",
        "deepspeed": str(tmp_path / "zero2.json"),
    }
    # The same config from Python, and back to the recipe's keys.
    assert (
        from_dict(
            TrainConfig,
            {
                **yaml.safe_load(RECIPE_YAML),
                "dataset_path": tmp_path / "prep",
                "init_adapter": tmp_path / "adapter",
                "deepspeed": str(tmp_path / "zero2.json"),
            },
        )
        == from_yaml
    )
    assert to_dict(from_yaml)["sft"]["report_to"] == ["wandb"]


def test_words_and_flags_override_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model_name_or_path: m\ndataset_path: d\ntemplate: chatml\noutput_dir: o\nlearning_rate: 0.1\nmax_steps: 5\n"
    )
    config = load_recipe(recipe, ["learning_rate=0.2", "--learning_rate", "0.3", "method=full"])
    assert (config.sft["learning_rate"], config.sft["max_steps"], config.method) == (0.3, 5, "full")


MINIMAL = "model_name_or_path: m\ndataset_path: d\ntemplate: chatml\noutput_dir: o\n"


@pytest.mark.parametrize(
    "line, words, message",
    [
        ("learnig_rate: 1e-4", [], "Unknown key `learnig_rate` in r.yaml; did you mean `learning_rate`?"),
        ("", ["lora_dropuot=0.1"], "Unknown key `lora_dropuot` on the command line; did you mean `lora_dropout`?"),
        ("", ["--batch", "4"], "Unknown key `--batch` on the command line"),
        ("learning_rate: fast", [], "`learning_rate` (in r.yaml) must be a number, not 'fast'."),
        ("max_steps: -3", [], "`max_steps` must be -1 (train for num_train_epochs) or at least 1, not -3."),
        ("", ["max_steps=0"], "`max_steps` must be -1 (train for num_train_epochs) or at least 1, not 0."),
        ("", ["--per_device_train_batch_size", "0"], "`per_device_train_batch_size` must be at least 1, not 0."),
        ("lora_r: 0", [], "`lora_r` (in r.yaml) must be at least 1, not 0."),
        ("method: dora", [], "`method` (in r.yaml) must be one of 'full', 'lora', 'qlora', not 'dora'."),
        ("", ["template=llama2"], "`template` (template=llama2) must be one of userlm-llama3, chatml, not 'llama2'."),
        (
            "completion_only_loss: false",
            [],
            "`completion_only_loss` must be True: the loss mask comes from the flipped samples.",
        ),
        ("deepspeed: nowhere.json", [], "The DeepSpeed config nowhere.json does not exist"),
        ("max_length: 8", [], "`max_length` must be at least 16, not 8."),
        ("learning_rate: 5", [], "`learning_rate` must be at most 1, not 5.0."),
        ("lora_dropout: 1", [], "`lora_dropout` (in r.yaml) must be at most 0.9, not 1.0."),
        ("lora_r: 100000", [], "`lora_r` (in r.yaml) must be at most 4096, not 100000."),
        ("end_marker_init: zero", [], "`end_marker_init` (in r.yaml) must be one of 'eos', 'eot', 'mean', not 'zero'."),
        ("new_token_learning_rate: 0", [], "`new_token_learning_rate` (in r.yaml) must be more than 0, not 0.0."),
        ("end_sample_repeats: 0", [], "`end_sample_repeats` (in r.yaml) must be at least 1, not 0."),
        (
            "method: full\nnew_token_learning_rate: 0.01",
            [],
            "`new_token_learning_rate` applies to the token rows LoRA trains",
        ),
        ("method: full\ninit_adapter: a", [], "`init_adapter` continues a LoRA adapter"),
        ("", ["output_dir=d"], "output_dir d is the dataset_path d, which training would overwrite"),
        ("", ["output_dir=d/run"], "output_dir d/run is inside the dataset_path d, which training would overwrite"),
    ],
)
def test_a_bad_key_or_value_is_one_sentence_naming_it(line, words, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL + line + "\n")
    with pytest.raises(UserError) as error:
        load_recipe(recipe, words)
    assert message in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # stopped before any output folder


def test_configs_built_in_python_are_checked_too():
    with pytest.raises(UserError, match="Unknown key `learnig_rate` in the recipe"):
        TrainConfig(
            model_name_or_path="m", dataset_path="d", template="chatml", output_dir="o", sft={"learnig_rate": 1e-4}
        )
    with pytest.raises(UserError, match="`max_steps` must be a whole number"):
        TrainConfig(model_name_or_path="m", dataset_path="d", template="chatml", output_dir="o", sft={"max_steps": 2.5})


def test_userlm_train_finds_a_shipped_recipe_by_name_and_names_an_unknown_one(tmp_path, monkeypatch, capsys):
    from userlm.cli import main

    monkeypatch.chdir(tmp_path)
    # Found by name from an empty folder: the run gets as far as its data, which is missing here.
    assert main(["train", "smollm2-cpu-quickstart", "dataset_path=no-data", "max_steps=1"]) == 2
    assert "Dataset no-data does not exist; run `userlm prep` first" in capsys.readouterr().err
    assert main(["train", "no-such-recipe"]) == 2
    assert "No recipe no-such-recipe: it is not a file, nor a shipped recipe" in capsys.readouterr().err
    assert main(["train", "missing.yaml"]) == 2
    assert "No recipe missing.yaml" in capsys.readouterr().err


def test_help_shows_the_recipes_values_and_fails_on_an_unknown_recipe(tmp_path, monkeypatch, capsys):
    from userlm.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["train", "smollm2-cpu-quickstart", "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    # The recipe sets lora_dropout 0.0 where the library's default is 0.05.
    assert "dropout on the LoRA input (default: 0.0, from smollm2-cpu-quickstart.yaml)" in text
    assert main(["train", "no-such-recipe", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No recipe no-such-recipe: it is not a file, nor a shipped recipe" in err


def test_missing_keys_and_paths_are_one_clear_sentence(tmp_path, tiny_llama):
    from userlm.train.sft import build_trainer

    def config(**values):
        return from_dict(
            TrainConfig,
            {
                "model_name_or_path": "default",
                "dataset_path": tmp_path / "prep",
                "template": "chatml",
                "output_dir": str(tmp_path / "o"),
                **values,
            },
        )

    with pytest.raises(UserError, match="Set `template`: as template=..., with --template, or in the config file."):
        from_dict(TrainConfig, {"model_name_or_path": "m", "dataset_path": "d", "output_dir": "o"})
    with pytest.raises(UserError, match="is not a local folder and the hub is offline"):
        build_trainer(config(model_name_or_path=str(tmp_path / "no-model")))
    with pytest.raises(UserError, match="run `userlm prep` first"):
        build_trainer(config(model_name_or_path=str(tiny_llama()), dataset_path=tmp_path / "no-data"))
    with pytest.raises(UserError, match="resume_from_checkpoint .* is not a checkpoint folder"):
        build_trainer(config(resume_from_checkpoint=str(tmp_path / "checkpoint-9")))


def test_cli_prints_the_error_without_a_traceback(tmp_path, capsys):
    from userlm.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + "batch: 4\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Unknown key `batch` in r.yaml" in err

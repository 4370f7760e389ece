"""The one config machinery every stage uses (userlm/config.py): YAML, key=value and flags agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from userlm.config import Config, from_dict, parse_config, shipped_config, to_dict
from userlm.errors import UserError


@dataclass(kw_only=True)
class Limits(Config):
    min_words: int | None = field(default=3, metadata={"help": "fewest words", "min": 0})
    until: int | Literal["never"] = 2
    banned: list[str] = field(default_factory=lambda: ["I", "You"])


@dataclass(kw_only=True)
class Example(Config):
    inputs: list[Path] = field(metadata={"positional": True, "help": "input files"})
    out: Path = field(default=Path("out/example"), metadata={"help": "output folder"})
    rate: float = field(default=0.5, metadata={"help": "a share", "min": 0, "max": 1})
    steps: int = field(default=10, metadata={"help": "steps", "min": 1})
    progress: bool = True
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    name: str | None = None
    limits: Limits | None = field(default_factory=Limits)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "example.yaml"
    path.write_text(text)
    return path


def test_yaml_key_value_and_flags_give_the_same_config(tmp_path):
    yaml_file = write(
        tmp_path,
        "inputs: [a.json, b.json]\nout: o\nrate: 0.25\nsteps: 7\nprogress: false\nsplit: [0.8, 0.1, 0.1]\n"
        "name: run\nlimits:\n  min_words: 5\n  until: never\n  banned: [Hi]\n",
    )
    from_yaml = parse_config(Example, [str(yaml_file)], prog="t")
    from_flags = parse_config(
        Example,
        [
            "a.json",
            "b.json",
            "--out",
            "o",
            "--rate",
            "0.25",
            "--steps",
            "7",
            "--no-progress",
            "--split",
            "0.8,0.1,0.1",
            "--name",
            "run",
            "--limits.min_words",
            "5",
            "--limits.until",
            "never",
            "--limits.banned",
            "Hi",
        ],
        prog="t",
    )
    from_words = parse_config(
        Example,
        [
            "a.json",
            "b.json",
            "out=o",
            "rate=0.25",
            "steps=7",
            "progress=false",
            "split=[0.8, 0.1, 0.1]",
            "name=run",
            "limits.min_words=5",
            "limits.until=never",
            "limits.banned=[Hi]",
        ],
        prog="t",
    )
    from_python = Example(
        inputs=["a.json", "b.json"],
        out="o",
        rate=0.25,
        steps=7,
        progress=False,
        split=[0.8, 0.1, 0.1],
        name="run",
        limits=Limits(min_words=5, until="never", banned=["Hi"]),
    )
    assert from_yaml == from_flags == from_words == from_python
    assert from_yaml.inputs == [Path("a.json"), Path("b.json")] and from_yaml.split == (0.8, 0.1, 0.1)
    assert to_dict(from_yaml)["limits"] == {"min_words": 5, "until": "never", "banned": ["Hi"]}


def test_later_sources_override_earlier_ones(tmp_path):
    yaml_file = write(tmp_path, "inputs: [a.json]\nrate: 0.25\nsteps: 7\n")
    config = parse_config(Example, [str(yaml_file), "rate=0.5", "--rate", "0.75", "--no-limits"], prog="t")
    assert (config.rate, config.steps, config.limits) == (0.75, 7, None)


@pytest.mark.parametrize(
    "words, message",
    [
        (["a.json", "--rte", "1"], "Unknown key `--rte` on the command line; did you mean `--rate`?"),
        (["a.json", "rte=1"], "Unknown key `rte` on the command line; did you mean `rate`?"),
        (["a.json", "--rate", "nan"], "`rate` (--rate) must be a number, not 'nan'."),
        (["a.json", "--rate", "fast"], "`rate` (--rate) must be a number, not 'fast'."),
        (["a.json", "--rate", "2"], "`rate` (--rate) must be at most 1, not 2.0."),
        (["a.json", "steps=-3"], "`steps` (steps=-3) must be at least 1, not -3."),
        (["a.json", "steps=2.5"], "`steps` (steps=2.5) must be a whole number, not 2.5."),
        (["a.json", "--split", "1,2"], "`split` (--split) must be 3 values, each a number, not ['1', '2']."),
        (["a.json", "--limits.until", "soon"], "must be a whole number or one of 'never'"),
        ([], "Set `inputs`: as words after the command, or in the config file."),
    ],
)
def test_bad_values_are_one_sentence_naming_the_key(words, message):
    with pytest.raises(UserError) as error:
        parse_config(Example, words, prog="t")
    assert message in str(error.value)


def test_unknown_yaml_key_names_the_file_and_the_closest_key(tmp_path):
    yaml_file = write(tmp_path, "inputs: [a.json]\nrtae: 1\n")
    with pytest.raises(UserError, match=r"Unknown key `rtae` in example.yaml; did you mean `rate`\?"):
        parse_config(Example, [str(yaml_file)], prog="t")
    bad = write(tmp_path, "inputs: [a.json\n")
    with pytest.raises(UserError, match="is not valid YAML at line"):
        parse_config(Example, [str(bad)], prog="t")


def test_python_configs_are_checked_too():
    with pytest.raises(UserError, match="`rate` must be a number, not 'fast'"):
        Example(inputs=["a.json"], rate="fast")
    with pytest.raises(UserError, match="`min_words` must be at least 0"):
        Example(inputs=["a.json"], limits={"min_words": -1})
    assert from_dict(Example, {"inputs": ["a"], "limits": {"min_words": 1}}).limits.min_words == 1


def test_relative_paths_in_a_config_file_are_read_beside_it(tmp_path, monkeypatch):
    (tmp_path / "data.json").write_text("[]")
    yaml_file = write(tmp_path, "inputs: [x]\nout: data.json\n")
    monkeypatch.chdir(tmp_path.parent)
    assert parse_config(Example, [str(yaml_file)], prog="t").out == tmp_path / "data.json"


def test_shipped_configs_are_found_by_name():
    assert shipped_config("smollm2-cpu-quickstart").name == "smollm2-cpu-quickstart.yaml"
    assert shipped_config("quickstart").name == "quickstart.yaml"
    assert shipped_config("no-such-recipe") is None


def test_an_unknown_key_in_a_nested_mapping_names_its_parent_and_file(tmp_path):
    yaml_file = write(tmp_path, "inputs: [a.json]\nlimits:\n  min_wrds: 2\n")
    with pytest.raises(
        UserError, match=r"Unknown key `min_wrds` under `limits` \(in example.yaml\); did you mean `min_words`\?"
    ):
        parse_config(Example, [str(yaml_file)], prog="t")


def test_a_union_of_a_path_and_a_list_takes_one_value_as_a_flag():
    @dataclass(kw_only=True)
    class Inputs(Config):
        intents: Path | list[str]

    assert parse_config(Inputs, ["--intents", "intents.txt"], prog="t").intents == Path("intents.txt")
    assert parse_config(Inputs, ["intents=[a, b]"], prog="t").intents == ["a", "b"]


def test_a_percent_sign_in_a_keys_help_shows_in_help(capsys):
    @dataclass(kw_only=True)
    class Share(Config):
        tolerance: float = field(default=0.02, metadata={"help": "within 2% of the exact figure"})

    with pytest.raises(SystemExit) as exit:
        parse_config(Share, ["--help"], prog="share")
    assert exit.value.code == 0
    assert "within 2% of the exact figure" in capsys.readouterr().out

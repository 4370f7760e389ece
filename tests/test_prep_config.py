"""`PrepConfig` is at once the YAML file, the flags and the Python API of `userlm prep`:
the three spellings give one config, unknown keys are one sentence naming them, and
`userlm prep CONFIG.yaml` runs end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from userlm.cli import main as userlm
from userlm.config import from_dict, parse_config, read_yaml, shipped_config
from userlm.data_prep.config import PrepConfig
from userlm.errors import UserError
from userlm.flipped.samples import open_lines

FIXTURES = Path(__file__).parent / "fixtures" / "prep"
OPENAI, WILDCHAT = FIXTURES / "openai.jsonl", FIXTURES / "wildchat.jsonl"


def parse(words: list[str]) -> PrepConfig:
    return parse_config(PrepConfig, words, prog="userlm prep")


def test_yaml_flags_and_key_value_words_give_the_same_config(tmp_path):
    yaml_file = tmp_path / "prep.yaml"
    yaml_file.write_text(
        f"inputs: [{OPENAI}, {WILDCHAT}]\n"
        "out: runs/prep\n"
        "format: openai\n"
        "languages: [en, FR]\n"
        "keep_toxic: true\n"
        "min_user_turns: 2\n"
        "max_user_turns: 9\n"
        "min_chars: 5\n"
        "max_chars: 5000\n"
        "exact_dedup: false\n"
        "near_dup_threshold: 0\n"
        "split: [0.8, 0.1, 0.1]\n"
        "intents: llm\n"
        "intent_endpoint: http://127.0.0.1:8000/v1\n"
        "intent_model: qwen\n"
        "personas: style\n"
        "persona_filter: words_per_turn<=12,politeness=rare\n"
        "endpoint_timeout: 30\n"
        "endpoint_concurrency: 2\n"
        "hf: false\n"
        "num_proc: 2\n"
        "chunk_mb: 0.5\n"
        "progress: false\n"
    )
    from_yaml = parse([str(yaml_file)])
    from_flags = parse(
        [
            str(OPENAI),
            str(WILDCHAT),
            "--out",
            "runs/prep",
            "--format",
            "openai",
            "--languages",
            "en",
            "FR",
            "--keep-toxic",
            "--min-user-turns",
            "2",
            "--max-user-turns",
            "9",
            "--min-chars",
            "5",
            "--max-chars",
            "5000",
            "--no-exact-dedup",
            "--near-dup-threshold",
            "0",
            "--split",
            "0.8,0.1,0.1",
            "--intents",
            "llm",
            "--intent-endpoint",
            "http://127.0.0.1:8000/v1",
            "--intent-model",
            "qwen",
            "--personas",
            "style",
            "--persona-filter",
            "words_per_turn<=12,politeness=rare",
            "--endpoint-timeout",
            "30",
            "--endpoint-concurrency",
            "2",
            "--no-hf",
            "--num-proc",
            "2",
            "--chunk-mb",
            "0.5",
            "--no-progress",
        ]
    )
    from_words = parse(
        [
            str(OPENAI),
            str(WILDCHAT),
            "out=runs/prep",
            "format=openai",
            "languages=en,FR",
            "keep_toxic=true",
            "min_user_turns=2",
            "max_user_turns=9",
            "min_chars=5",
            "max_chars=5000",
            "exact_dedup=false",
            "near_dup_threshold=0",
            "split=[0.8, 0.1, 0.1]",
            "intents=llm",
            "intent_endpoint=http://127.0.0.1:8000/v1",
            "intent_model=qwen",
            "personas=style",
            "persona_filter=words_per_turn<=12,politeness=rare",
            "endpoint_timeout=30",
            "endpoint_concurrency=2",
            "hf=false",
            "num_proc=2",
            "chunk_mb=0.5",
            "progress=false",
        ]
    )
    from_python = PrepConfig(
        inputs=[OPENAI, WILDCHAT],
        out=Path("runs/prep"),
        format="openai",
        languages=["en", "fr"],
        keep_toxic=True,
        min_user_turns=2,
        max_user_turns=9,
        min_chars=5,
        max_chars=5000,
        exact_dedup=False,
        near_dup_threshold=0.0,
        split=(0.8, 0.1, 0.1),
        intents="llm",
        intent_endpoint="http://127.0.0.1:8000/v1",
        intent_model="qwen",
        personas="style",
        persona_filter="words_per_turn<=12,politeness=rare",
        endpoint_timeout=30.0,
        endpoint_concurrency=2,
        hf=False,
        num_proc=2,
        chunk_mb=0.5,
        progress=False,
    )
    assert from_yaml == from_flags == from_words == from_python
    assert from_yaml.languages == ["en", "fr"] and from_yaml.split == (0.8, 0.1, 0.1)
    assert from_yaml.intent_endpoint == ["http://127.0.0.1:8000/v1"]
    assert from_dict(PrepConfig, read_yaml(yaml_file)) == from_python


@pytest.mark.parametrize(
    "words", [["--languages", "any"], ["languages=any"], ["--languages", "ANY"], ["languages=null"]]
)
def test_any_language_keeps_every_language(words):
    assert parse([str(OPENAI), *words]).languages is None
    assert parse([str(OPENAI)]).languages == ["en"]


def test_flags_override_the_yaml_and_inputs_on_the_command_line_replace_its_inputs(tmp_path):
    yaml_file = tmp_path / "prep.yaml"
    yaml_file.write_text(f"inputs: [{OPENAI}]\nmin_chars: 5\nsplit: [0.8, 0.1, 0.1]\n")
    config = parse([str(yaml_file), str(WILDCHAT), "min_chars=7", "--split", "1,0,0"])
    assert (config.inputs, config.min_chars, config.split) == ([WILDCHAT], 7, (1.0, 0.0, 0.0))


def test_quickstart_preps_with_the_defaults_plus_style_personas_and_scope_dropout():
    """The shipped quickstart's prep section is the default prep with measured-style personas, so its counts
    are the ones the README gives, and half the train split's scope sentences dropped (docs/evaluation.md)."""
    section = read_yaml(shipped_config("quickstart"))["prep"]
    assert from_dict(PrepConfig, {**section, "inputs": [str(OPENAI)]}) == PrepConfig(
        inputs=[OPENAI], personas="style", scope_dropout=0.5
    )


def userlm_prep(words: list[str], capsys) -> tuple[int, str, str]:
    code = userlm(["prep", *words])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "yaml_text, words, message",
    [
        ("out_dir: out\n", [], "Unknown key `out_dir` in prep.yaml"),
        ("lanugages: [en]\n", [], "Unknown key `lanugages` in prep.yaml; did you mean `languages`?"),
        ("", ["--drop-toxic"], "Unknown key `--drop-toxic` on the command line"),
        (
            "",
            ["--near-dup-threshhold", "0.5"],
            "Unknown key `--near-dup-threshhold` on the command line; did you mean `--near-dup-threshold`?",
        ),
        ("", ["split_shares=1,0,0"], "Unknown key `split_shares` on the command line"),
    ],
)
def test_an_unknown_key_is_one_sentence_naming_it(tmp_path, capsys, yaml_text, words, message):
    yaml_file = tmp_path / "prep.yaml"
    yaml_file.write_text(f"inputs: [{OPENAI}]\n{yaml_text}")
    with pytest.raises(UserError, match=message.replace("?", r"\?")):
        parse([str(yaml_file), *words])
    code, out, err = userlm_prep([str(yaml_file), "--out", str(tmp_path / "out"), *words], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"userlm prep: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_userlm_prep_runs_from_a_yaml_config(tmp_path, capsys, monkeypatch):
    logs = tmp_path / "project" / "logs"
    logs.mkdir(parents=True)
    shutil.copy(WILDCHAT, logs / "wildchat.jsonl")
    yaml_file = tmp_path / "project" / "prep.yaml"
    out = tmp_path / "project" / "out"
    # A relative input is read beside the config file, wherever the command runs from.
    yaml_file.write_text(f"inputs: [logs/wildchat.jsonl]\nout: {out}\nlanguages: [en]\nsplit: [1, 0, 0]\nhf: false\n")
    monkeypatch.chdir(tmp_path)
    code, printed, err = userlm_prep([str(yaml_file), "--no-progress"], capsys)
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["inputs"] == [{"path": str(logs / "wildchat.jsonl"), "format": "wildchat", "records": 4}]
    assert (stats["read"], stats["kept"], stats["filtered"]["toxic"], stats["filtered"]["language"]) == (4, 2, 1, 1)
    kept = [json.loads(line)["conversation_id"] for line in (out / "conversations.jsonl").read_text().splitlines()]
    assert kept == ["wc-001", "wc-004"]
    assert len(list(open_lines(out / "train.jsonl.gz"))) == stats["splits"]["train"]["samples"] > 0
    assert "4 read = 2 kept + 0 rejected + 2 filtered" in printed and not (out / "hf").exists()
    # A key=value word overrides the file: the toxic record stays.
    code, _, err = userlm_prep([str(yaml_file), "keep_toxic=true", "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((out / "stats.json").read_text())["kept"] == 3

"""`EvalConfig`: a YAML file, the equivalent flags and key=value words give one config; bad ones are one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from userlm.config import parse_config, to_dict
from userlm.errors import UserError
from userlm.evaluation.config import CheckpointSpec, EvalConfig


@pytest.fixture
def paths(tmp_path):
    """A test file and a checkpoint folder that exist (the config checks both)."""
    (tmp_path / "test.jsonl").write_text("{}\n")
    (tmp_path / "sim").mkdir()
    return tmp_path / "test.jsonl", tmp_path / "sim"


def parse(words):
    return parse_config(EvalConfig, words, prog="userlm eval")


def test_yaml_flags_and_key_value_words_give_the_same_config(tmp_path, paths):
    data, sim = paths
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text(
        f"checkpoints:\n  - sim={sim}\n  - base=default@chatml\ndata: {data}\nout: {tmp_path / 'report'}\n"
        "seed: 3\nperplexity_samples: 0\nbatch_size: 2\nprobes_per_kind: 4\n"
        "judge_endpoint: http://127.0.0.1:9/v1\njudge_model: judge\nprogress: false\n"
    )
    from_yaml = parse([str(yaml_file)])
    from_flags = parse([
        "--checkpoints", f"sim={sim}", "base=default@chatml", "--data", str(data), "--out", str(tmp_path / "report"),
        "--seed", "3", "--perplexity-samples", "0", "--batch_size", "2", "--probes-per-kind", "4",
        "--judge-endpoint", "http://127.0.0.1:9/v1", "--judge-model", "judge", "--no-progress",
    ])
    from_words = parse([
        f"checkpoints=[sim={sim}, base=default@chatml]", f"data={data}", f"out={tmp_path / 'report'}", "seed=3",
        "perplexity_samples=0", "batch_size=2", "probes_per_kind=4", "judge_endpoint=http://127.0.0.1:9/v1",
        "judge_model=judge", "progress=false",
    ])
    from_python = EvalConfig(
        checkpoints=[f"sim={sim}", "base=default@chatml"], data=data, out=tmp_path / "report", seed=3, perplexity_samples=0,
        batch_size=2, probes_per_kind=4, judge_endpoint="http://127.0.0.1:9/v1", judge_model="judge", progress=False,
    )
    assert from_yaml == from_flags == from_words == from_python
    assert from_yaml.specs == [CheckpointSpec("sim", sim, None), CheckpointSpec("base", Path("default"), "chatml")]
    assert to_dict(from_yaml)["checkpoints"] == [f"sim={sim}", "base=default@chatml"]
    # Defaults where nothing was said.
    assert (from_yaml.first_turn_intents, from_yaml.max_new_tokens, from_yaml.judge_api_key_env) == (100, 64, "OPENAI_API_KEY")


def test_a_relative_data_path_in_a_yaml_file_is_read_beside_it(tmp_path, paths, monkeypatch):
    data, sim = paths
    (tmp_path / "eval.yaml").write_text(f"checkpoints: [sim={sim}]\ndata: test.jsonl\n")
    monkeypatch.chdir(tmp_path.parent)
    assert parse([str(tmp_path / "eval.yaml")]).data == data


def test_unknown_keys_are_named(tmp_path, paths):
    data, sim = paths
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text(f"checkpoints: [sim={sim}]\ndata: {data}\nbatch_sise: 4\n")
    with pytest.raises(UserError, match=r"Unknown key `batch_sise` in eval.yaml; did you mean `batch_size`\?"):
        parse([str(yaml_file)])
    with pytest.raises(UserError, match=r"Unknown key `--checkpoint` on the command line; did you mean `--checkpoints`\?"):
        parse(["--checkpoint", f"sim={sim}", "--data", str(data)])
    with pytest.raises(UserError, match=r"Unknown key `judge` on the command line; did you mean `judge_model`\?"):
        parse([f"checkpoints=[sim={sim}]", f"data={data}", "judge=http://x/v1"])


@pytest.mark.parametrize(
    "extra, message",
    [
        # Bounds and types: the key, then the rule (the source in between is userlm/config.py's).
        (["--batch-size", "0"], ("`batch_size`", "must be at least 1, not 0.")),
        (["--first-turn-intents", "1"], ("`first_turn_intents`", "must be at least 2, not 1.")),
        (["termination_conversations=-1"], ("`termination_conversations`", "must be at least 0, not -1.")),
        (["--max_new_tokens", "many"], ("`max_new_tokens`", "must be a whole number, not 'many'.")),
        # Rules across fields.
        (["--judge-endpoint", "http://127.0.0.1:9/v1"], ("Name the judge's model with judge_model when you give judge_endpoint.",)),
        (["--checkpoints", "a=default@chatml", "a=default"], ("Two checkpoints are named 'a'; give every checkpoint a different NAME.",)),
        (["--checkpoints", "no-name"], ("Give each checkpoint as NAME=PATH or NAME=PATH@TEMPLATE, not 'no-name'.",)),
        (["--checkpoints", "x=default@llama"], ("Checkpoint x: nothing at default@llama;",)),
        (["--data", "missing.jsonl"], ("The test data missing.jsonl does not exist;",)),
    ],
)
def test_bad_configs_stop_before_any_work_with_one_sentence(paths, extra, message):
    data, sim = paths
    with pytest.raises(UserError) as error:
        parse(["--checkpoints", f"sim={sim}", "--data", str(data), *extra])
    assert all(part in str(error.value) for part in message), str(error.value)


def test_checkpoints_and_data_are_required(paths):
    data, sim = paths
    with pytest.raises(UserError, match="Set `checkpoints`: as checkpoints=..., with --checkpoints, or in the config file."):
        parse(["--data", str(data)])
    with pytest.raises(UserError, match="Set `data`"):
        parse(["--checkpoints", f"sim={sim}"])

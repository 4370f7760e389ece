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
        "end_probability_conversations: 20\npersona_users: 7\n"
        "persona_filter: length=very_short|short\ncontrast_intents: 0\n"
    )
    from_yaml = parse([str(yaml_file)])
    from_flags = parse(
        [
            "--checkpoints",
            f"sim={sim}",
            "base=default@chatml",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "report"),
            "--seed",
            "3",
            "--perplexity-samples",
            "0",
            "--batch_size",
            "2",
            "--probes-per-kind",
            "4",
            "--judge-endpoint",
            "http://127.0.0.1:9/v1",
            "--judge-model",
            "judge",
            "--no-progress",
            "--end-probability-conversations",
            "20",
            "--persona-users",
            "7",
            "--persona-filter",
            "length=very_short|short",
            "--contrast-intents",
            "0",
        ]
    )
    from_words = parse(
        [
            f"checkpoints=[sim={sim}, base=default@chatml]",
            f"data={data}",
            f"out={tmp_path / 'report'}",
            "seed=3",
            "perplexity_samples=0",
            "batch_size=2",
            "probes_per_kind=4",
            "judge_endpoint=http://127.0.0.1:9/v1",
            "judge_model=judge",
            "progress=false",
            "end_probability_conversations=20",
            "persona_users=7",
            "persona_filter=length=very_short|short",
            "contrast_intents=0",
        ]
    )
    from_python = EvalConfig(
        checkpoints=[f"sim={sim}", "base=default@chatml"],
        data=data,
        out=tmp_path / "report",
        seed=3,
        perplexity_samples=0,
        batch_size=2,
        probes_per_kind=4,
        judge_endpoint="http://127.0.0.1:9/v1",
        judge_model="judge",
        progress=False,
        end_probability_conversations=20,
        persona_users=7,
        persona_filter="length=very_short|short",
        contrast_intents=0,
    )
    assert from_yaml == from_flags == from_words == from_python
    assert from_yaml.specs == [CheckpointSpec("sim", sim, None), CheckpointSpec("base", Path("default"), "chatml")]
    assert to_dict(from_yaml)["checkpoints"] == [f"sim={sim}", "base=default@chatml"]
    # Defaults where nothing was said.
    assert (from_yaml.first_turn_intents, from_yaml.max_new_tokens, from_yaml.judge_api_key_env) == (
        100,
        64,
        "OPENAI_API_KEY",
    )
    # P(end) scores every held-out decision point unless told otherwise.
    assert parse(["--checkpoints", f"sim={sim}", "--data", str(data)]).end_probability_conversations is None


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
    with pytest.raises(
        UserError, match=r"Unknown key `--checkpoint` on the command line; did you mean `--checkpoints`\?"
    ):
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
        (
            ["--judge-endpoint", "http://127.0.0.1:9/v1"],
            ("Name the judge's model with judge_model when you give judge_endpoint.",),
        ),
        (
            ["--checkpoints", "a=default@chatml", "a=default"],
            ("Two checkpoints are named 'a'; give every checkpoint a different NAME.",),
        ),
        (["--checkpoints", "no-name"], ("Give each checkpoint as NAME=PATH or NAME=PATH@TEMPLATE, not 'no-name'.",)),
        (["--checkpoints", "x=default@llama"], ("Checkpoint x: nothing at default@llama;",)),
        (["--data", "missing.jsonl"], ("The test data missing.jsonl does not exist;",)),
        (["end_probability_conversations=-1"], ("`end_probability_conversations`", "must be at least 0, not -1.")),
        (["--persona-turns-per-user", "0"], ("`persona_turns_per_user`", "must be at least 1, not 0.")),
        (
            ["--persona-filter", "length=tiny"],
            ("The persona filter part 'length=tiny' has tiny, not a value of length",),
        ),
        (
            ["--compare", "sim minus base"],
            (
                "Give each comparison as 'NAME minus OTHER' with two different checkpoint names (sim),",
                "'sim minus base'.",
            ),
        ),
        (["compare=[sim-sim]"], ("Give each comparison as 'NAME minus OTHER'", "not 'sim-sim'")),
    ],
)
def test_bad_configs_stop_before_any_work_with_one_sentence(paths, extra, message):
    data, sim = paths
    with pytest.raises(UserError) as error:
        parse(["--checkpoints", f"sim={sim}", "--data", str(data), *extra])
    assert all(part in str(error.value) for part in message), str(error.value)


def test_compare_names_pairs_of_checkpoints(paths):
    data, sim = paths
    config = parse(
        ["--checkpoints", f"sim={sim}", "base=default@chatml", "--data", str(data), "--compare", "base minus sim"]
    )
    assert config.compare == ["base minus sim"]
    assert parse(["--checkpoints", f"sim={sim}", "--data", str(data)]).compare is None


def test_data_may_be_a_prep_folder_whose_test_split_is_read(tmp_path, paths):
    _, sim = paths
    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "test.jsonl.gz").write_bytes(b"")
    assert parse(["--checkpoints", f"sim={sim}", "--data", str(prep)]).data == prep / "test.jsonl.gz"
    with pytest.raises(UserError, match="holds no test samples"):
        parse(["--checkpoints", f"sim={sim}", "--data", str(sim)])


def test_checkpoints_and_data_are_required(paths):
    data, sim = paths
    with pytest.raises(
        UserError, match="Set `checkpoints`: as checkpoints=..., with --checkpoints, or in the config file."
    ):
        parse(["--data", str(data)])
    with pytest.raises(UserError, match="Set `data`"):
        parse(["--checkpoints", f"sim={sim}"])


def test_the_shipped_paper_size_config_is_found_by_name(paths, capsys):
    """`userlm eval eval-paper-gpu ...`: the paper's 2,000 first-turn intents, other sizes at least the defaults."""
    from userlm.cli import main
    from userlm.evaluation.cli import find_eval_config

    data, sim = paths
    path = find_eval_config("eval-paper-gpu")
    config = parse_config(EvalConfig, [str(path), f"checkpoints=sim={sim}", f"data={data}"], prog="userlm eval")
    default = EvalConfig(checkpoints=[f"sim={sim}"], data=data)
    assert config.first_turn_intents == 2000 and config.end_probability_conversations is None
    for key in (
        "perplexity_samples",
        "termination_conversations",
        "probes_per_kind",
        "persona_users",
        "contrast_intents",
    ):
        assert getattr(config, key) >= getattr(default, key), key
    assert main(["eval", "no-such-eval-config", f"data={data}"]) == 2
    assert "No eval config no-such-eval-config" in capsys.readouterr().err

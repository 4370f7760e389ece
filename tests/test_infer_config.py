"""`userlm simulate` and `userlm chat` configs: a YAML file, the equivalent flags and key=value
words give the same config; every bound and unknown key is one sentence naming the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from userlm.config import parse_config, to_dict
from userlm.errors import UserError
from userlm.infer.config import ChatConfig, SimulateConfig
from userlm.infer.guardrails import Guardrails
from userlm.infer.simulate import read_inputs, simulation_summary

INTENTS = [
    "You are a user chatting with an assistant language model to cook dinner.",
    "You are a user chatting with an assistant language model to fix a bug.",
]


def simulate_config(words: list[str]) -> SimulateConfig:
    return parse_config(SimulateConfig, words, prog="userlm simulate")


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    intents = tmp_path / "intents.txt"
    intents.write_text("\n".join(INTENTS) + "\n")
    personas = tmp_path / "personas.jsonl"
    personas.write_text(json.dumps({"persona": "Writes short, lowercase."}) + "\n")
    return {"intents": intents, "personas": personas, "out": tmp_path / "runs" / "sim.jsonl"}


def test_yaml_flags_and_words_give_the_same_simulate_config(tmp_path, files):
    yaml_file = tmp_path / "sim.yaml"
    yaml_file.write_text(
        f"simulator: out/persona\nassistant: http://127.0.0.1:8000/v1\nassistant_model: my-bot\n"
        f"intents: {files['intents']}\npersonas: {files['personas']}\nout: {files['out']}\n"
        "n_per_intent: 3\nmax_turns: 4\ntemperature: 0.7\ntop_p: 0.9\nprogress: false\nretry_failed: false\n"
        "guardrails:\n  min_words: 5\n  min_turns_before_end: never\n"
        "  banned_first_words: [Hi, Hello]\n  fallback: keep\n"
    )
    from_yaml = simulate_config([str(yaml_file)])
    from_flags = simulate_config(
        [
            "--simulator",
            "out/persona",
            "--assistant",
            "http://127.0.0.1:8000/v1",
            "--assistant-model",
            "my-bot",
            "--intents",
            str(files["intents"]),
            "--personas",
            str(files["personas"]),
            "--out",
            str(files["out"]),
            "--n-per-intent",
            "3",
            "--max_turns",
            "4",
            "--temperature",
            "0.7",
            "--top-p",
            "0.9",
            "--no-progress",
            "--no-retry-failed",
            "--guardrails.min_words",
            "5",
            "--guardrails.min-turns-before-end",
            "never",
            "--guardrails.banned_first_words",
            "Hi",
            "Hello",
            "--guardrails.fallback",
            "keep",
        ]
    )
    from_words = simulate_config(
        [
            "simulator=out/persona",
            "assistant=http://127.0.0.1:8000/v1",
            "assistant_model=my-bot",
            f"intents={files['intents']}",
            f"personas={files['personas']}",
            f"out={files['out']}",
            "n_per_intent=3",
            "max_turns=4",
            "temperature=0.7",
            "top_p=0.9",
            "progress=false",
            "retry_failed=false",
            "guardrails.min_words=5",
            "guardrails.min_turns_before_end=never",
            "guardrails.banned_first_words=[Hi, Hello]",
            "guardrails.fallback=keep",
        ]
    )
    from_python = SimulateConfig(
        simulator="out/persona",
        assistant="http://127.0.0.1:8000/v1",
        assistant_model="my-bot",
        intents=files["intents"],
        personas=files["personas"],
        out=files["out"],
        n_per_intent=3,
        max_turns=4,
        temperature=0.7,
        top_p=0.9,
        progress=False,
        retry_failed=False,
        guardrails=Guardrails(
            min_words=5, min_turns_before_end="never", banned_first_words=("Hi", "Hello"), fallback="keep"
        ),
    )
    assert from_yaml == from_flags == from_words == from_python
    # Keys not given keep their defaults, the nested ones included.
    assert (
        from_yaml.batch_size,
        from_yaml.seed,
        from_yaml.guardrails.max_words,
        from_yaml.guardrails.max_attempts,
    ) == (16, 0, 25, 4)
    assert to_dict(from_yaml)["guardrails"] == {
        "banned_first_words": ["Hi", "Hello"],
        "min_turns_before_end": "never",
        "min_words": 5,
        "max_words": 25,
        "filter_repetition": True,
        "max_attempts": 4,
        "fallback": "keep",
    }


def test_guardrails_off_and_nested_overrides(tmp_path, files):
    required = [
        "--simulator",
        "default",
        "--assistant",
        "hf:default",
        "--intents",
        str(files["intents"]),
        "--out",
        str(files["out"]),
    ]
    yaml_off = tmp_path / "off.yaml"
    yaml_off.write_text("guardrails: null\n")
    assert simulate_config([*required, "--no-guardrails"]).guardrails is None
    assert simulate_config([str(yaml_off), *required]).guardrails is None
    assert simulate_config([*required, "guardrails=null"]).guardrails is None
    assert simulate_config(required).guardrails == Guardrails()
    # A flag changes one key of the YAML's mapping and keeps the others.
    yaml_some = tmp_path / "some.yaml"
    yaml_some.write_text("guardrails:\n  min_words: 5\n  filter_repetition: false\n")
    mixed = simulate_config([str(yaml_some), *required, "--guardrails.max_words", "9"])
    assert mixed.guardrails == Guardrails(min_words=5, max_words=9, filter_repetition=False)
    # An empty ban list turns the first-word filter off.
    assert simulate_config([*required, "guardrails.banned_first_words=[]"]).guardrails.banned_first_words == ()


def test_intents_and_personas_inline_in_yaml(tmp_path):
    yaml_file = tmp_path / "sim.yaml"
    yaml_file.write_text(
        "simulator: default\nassistant: hf:default\nout: sim.jsonl\n"
        f"intents:\n  - {INTENTS[0]}\n  - {INTENTS[1]}\n  - {INTENTS[0]}\n"
        "personas:\n  - 'Writes short, lowercase.'\n"
    )
    config = simulate_config([str(yaml_file)])
    assert config.intents == [*INTENTS, INTENTS[0]] and config.personas == ["Writes short, lowercase."]
    assert config == simulate_config([str(yaml_file), f"intents={json.dumps([*INTENTS, INTENTS[0]])}"])
    # Repeats are dropped, the order kept.
    assert read_inputs(config.intents, "intent") == INTENTS
    assert read_inputs(config.personas, "persona") == ["Writes short, lowercase."]


def test_intent_files_text_and_jsonl(tmp_path, files):
    assert read_inputs(files["intents"], "intent") == INTENTS
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"intent": i, "split": "test"}) + "\n" for i in [*INTENTS, INTENTS[1]]))
    assert read_inputs(samples, "intent") == INTENTS
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"intent": INTENTS[0]}) + "\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(
        UserError, match=r"^Line 2 of .*bad.jsonl is not a JSON object with a 'intent' field; fix or remove it.$"
    ):
        read_inputs(bad, "intent")
    with pytest.raises(UserError, match=r"^No intent file at .*missing.txt; check the path.$"):
        read_inputs(tmp_path / "missing.txt", "intent")
    with pytest.raises(UserError, match=r"^Every persona in the list of personas is empty; give at least one.$"):
        read_inputs(["  ", ""], "persona")


@pytest.mark.parametrize(
    "words, message",
    [
        (["max_turn=3"], "Unknown key `max_turn` on the command line; did you mean `max_turns`?"),
        (["--n-per-intents", "2"], "Unknown key `--n-per-intents` on the command line; did you mean `--n-per-intent`?"),
        (
            ["--guardrails.min_wrds", "5"],
            "Unknown key `--guardrails.min_wrds` on the command line; did you mean `--guardrails.min_words`?",
        ),
        (["n_per_intent=0"], "`n_per_intent` (n_per_intent=0) must be at least 1, not 0."),
        (["--max-turns", "0"], "`max_turns` * must be at least 1, not 0."),
        (["--batch-size", "0"], "`batch_size` * must be at least 1, not 0."),
        (["--concurrency", "0"], "`concurrency` * must be at least 1, not 0."),
        (["--temperature", "-1"], "`temperature` * must be at least 0, not -1.0."),
        (["--top-p", "0"], "`top_p` * must be more than 0, not 0.0."),
        (["--top-p", "1.5"], "`top_p` * must be at most 1, not 1.5."),
        (["--max-new-tokens", "0"], "`max_new_tokens` * must be at least 1, not 0."),
        (["--timeout", "0"], "`timeout` * must be more than 0, not 0.0."),
        (["--template", "llama"], "`template` * must be one of userlm-llama3, chatml, not 'llama'."),
        (
            ["--simulator-server", "tgi"],
            "`simulator_server` * must be one of 'transformers', 'vllm', 'llamacpp', not 'tgi'.",
        ),
        (["--guardrails.max_attempts", "0"], "`max_attempts` * must be at least 1, not 0."),
        (
            ["--guardrails.min_turns_before_end", "soon"],
            "`min_turns_before_end` * must be a whole number or one of 'never', not 'soon'.",
        ),
        (
            ["--guardrails.min_words", "9", "--guardrails.max_words", "5"],
            "Set guardrails.min_words (9) no larger than guardrails.max_words (5).",
        ),
        (
            ["--simulator-endpoint", "http://127.0.0.1:9/v1", "--adapter", "lora"],
            "An adapter applies to a local simulator only; serve the merged model "
            "(`userlm merge`) behind simulator_endpoint instead.",
        ),
    ],
)
def test_bad_keys_and_values_are_one_sentence_naming_the_key(files, words, message):
    """`message` is the whole sentence; ` * ` stands for where the value came from, if the sentence says it."""
    required = [
        "--simulator",
        "default",
        "--assistant",
        "hf:default",
        "--intents",
        str(files["intents"]),
        "--out",
        str(files["out"]),
    ]
    with pytest.raises(UserError) as error:
        simulate_config([*required, *words])
    pattern = r"\s*(\([^)]*\)\s*)?".join(re.escape(part) for part in message.split(" * "))
    assert re.fullmatch(pattern, str(error.value)), str(error.value)


def test_unknown_yaml_keys_name_the_key(tmp_path, files):
    yaml_file = tmp_path / "sim.yaml"
    yaml_file.write_text(
        f"simulator: default\nassistant: hf:default\nintents: {files['intents']}\nout: o.jsonl\nmax_turn: 3\n"
    )
    with pytest.raises(UserError, match=r"^Unknown key `max_turn` in sim.yaml; did you mean `max_turns`\?$"):
        simulate_config([str(yaml_file)])
    yaml_file.write_text(
        "simulator: default\nassistant: hf:default\n"
        f"intents: {files['intents']}\nout: o.jsonl\nguardrails: {{min_wrds: 5}}\n"
    )
    with pytest.raises(UserError, match=r"^Unknown key `min_wrds`.*did you mean `min_words`\?$"):
        simulate_config([str(yaml_file)])
    with pytest.raises(UserError, match=r"^Set `intents`"):
        simulate_config(["--simulator", "default", "--assistant", "hf:default", "--out", "o.jsonl"])


def test_yaml_flags_and_words_give_the_same_chat_config(tmp_path):
    yaml_file = tmp_path / "chat.yaml"
    yaml_file.write_text(
        f"simulator: default\nintent: {INTENTS[0]}\npersona: Writes short.\nmax_turns: 3\nseed: 7\n"
        "guardrails:\n  max_words: 12\n  filter_repetition: false\n"
    )
    from_yaml = parse_config(ChatConfig, [str(yaml_file)], prog="userlm chat")
    from_flags = parse_config(
        ChatConfig,
        [
            "--simulator",
            "default",
            "--intent",
            INTENTS[0],
            "--persona",
            "Writes short.",
            "--max-turns",
            "3",
            "--seed",
            "7",
            "--guardrails.max_words",
            "12",
            "--no-guardrails.filter_repetition",
        ],
        prog="userlm chat",
    )
    from_words = parse_config(
        ChatConfig,
        [
            "simulator=default",
            f"intent={INTENTS[0]}",
            "persona=Writes short.",
            "max_turns=3",
            "seed=7",
            "guardrails.max_words=12",
            "guardrails.filter_repetition=false",
        ],
        prog="userlm chat",
    )
    expected = ChatConfig(
        simulator="default",
        intent=INTENTS[0],
        persona="Writes short.",
        max_turns=3,
        seed=7,
        guardrails=Guardrails(max_words=12, filter_repetition=False),
    )
    assert from_yaml == from_flags == from_words == expected
    assert expected.out == Path("out/chat.jsonl")
    with pytest.raises(UserError, match="`intent` .*must not be empty"):
        parse_config(ChatConfig, ["--simulator", "default", "--intent", ""], prog="userlm chat")


def test_simulation_summary_table():
    summary = {
        "conversations": 4,
        "skipped_already_done": 2,
        "retried_failed": 1,
        "turns": 14,
        "user_turns": 8,
        "termination_reasons": {
            "user_ended": 1,
            "max_turns": 3,
            "assistant_error": 0,
            "simulator_error": 0,
            "guardrails_exhausted": 0,
        },
        "guardrail_events": {"length": 5, "repetition": 1},
        "out": "runs/sim.jsonl",
    }
    table = simulation_summary(summary)
    rows = dict(table.rows)
    assert (rows["conversations simulated"], rows["already done, skipped"], rows["turns"], rows["user turns"]) == (
        4,
        2,
        14,
        8,
    )
    assert rows["failed before, retried"] == 1
    assert (rows["ended: user_ended"], rows["ended: max_turns"], rows["ended: assistant_error"]) == (1, 3, 0)
    assert (rows["guardrail event: length"], rows["guardrail event: repetition"]) == (5, 1)
    assert table.wrote == {"conversations": "runs/sim.jsonl"}
    assert table.notes == []
    summary["termination_reasons"]["assistant_error"] = 2
    assert simulation_summary(summary).notes == [
        "2 conversation(s) ended with assistant_error: see their records' error; a rerun of this command retries them."
    ]


def test_relative_paths_in_a_config_file_are_read_beside_it(tmp_path, files, monkeypatch):
    yaml_file = tmp_path / "sim.yaml"
    yaml_file.write_text(
        "simulator: default\nassistant: hf:default\nintents: intents.txt\npersonas: personas.jsonl\nout: o.jsonl\n"
    )
    monkeypatch.chdir(tmp_path.parent)
    config = simulate_config([str(yaml_file)])
    assert (config.intents, config.personas) == (files["intents"], files["personas"])
    assert read_inputs(config.intents, "intent") == INTENTS

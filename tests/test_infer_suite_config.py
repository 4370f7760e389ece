"""`userlm test` config: a suite YAML, the equivalent flags and key=value words give the same config;
intents and personas inline (texts or named mappings) or from files; names and thresholds resolved
per intent; bad values are one sentence naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from userlm.config import parse_config, to_dict
from userlm.errors import UserError
from userlm.infer.guardrails import Guardrails
from userlm.infer.suite.cases import intent_cases, persona_cases
from userlm.infer.suite.config import Judge, SuiteConfig, SuiteIntent, SuitePersona, Thresholds

PREFIX = "You are a user chatting with an assistant language model to"
REFUND = f"{PREFIX} get a refund for a kettle that arrived broken and leaks water everywhere."
BOOKING = f"{PREFIX} book a table."


def suite_config(words: list[str]) -> SuiteConfig:
    return parse_config(SuiteConfig, words, prog="userlm test")


def test_yaml_flags_and_words_give_the_same_suite_config(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: support\nsimulator: default\nassistant: http://127.0.0.1:8000/v1\nassistant_model: bot\n"
        "intents: intents.txt\npersonas: [Terse.]\nn_per_intent: 2\nmax_turns: 5\nseed: 3\nout: runs/today\n"
        "judge:\n  endpoint: http://127.0.0.1:8001/v1\n  model: judge\n  rubric: Solved it.\n"
        "thresholds:\n  min_success: 0.7\n  max_assistant_errors: 0.1\nintent_thresholds:\n  min_user_ended: 0.5\n"
        "guardrails:\n  min_words: 2\ncompare: runs/yesterday\nretry_failed: false\n"
    )
    (tmp_path / "intents.txt").write_text(f"{BOOKING}\n")
    from_yaml = suite_config([str(suite)])
    from_flags = suite_config(
        [
            "--name",
            "support",
            "--simulator",
            "default",
            "--assistant",
            "http://127.0.0.1:8000/v1",
            "--assistant-model",
            "bot",
            "--intents",
            str(tmp_path / "intents.txt"),
            "personas=[Terse.]",
            "--n-per-intent",
            "2",
            "--max-turns",
            "5",
            "--seed",
            "3",
            "--out",
            "runs/today",
            "--judge.endpoint",
            "http://127.0.0.1:8001/v1",
            "--judge.model",
            "judge",
            "--judge.rubric",
            "Solved it.",
            "--thresholds.min_success",
            "0.7",
            "--thresholds.max_assistant_errors",
            "0.1",
            "--intent-thresholds.min-user-ended",
            "0.5",
            "--guardrails.min_words",
            "2",
            "--compare",
            "runs/yesterday",
            "--no-retry-failed",
        ]
    )
    from_words = suite_config(
        [
            "name=support",
            "simulator=default",
            "assistant=http://127.0.0.1:8000/v1",
            "assistant_model=bot",
            f"intents={tmp_path / 'intents.txt'}",
            "personas=[Terse.]",
            "n_per_intent=2",
            "max_turns=5",
            "seed=3",
            "out=runs/today",
            "judge.endpoint=http://127.0.0.1:8001/v1",
            "judge.model=judge",
            "judge.rubric=Solved it.",
            "thresholds.min_success=0.7",
            "thresholds.max_assistant_errors=0.1",
            "intent_thresholds.min_user_ended=0.5",
            "guardrails.min_words=2",
            "compare=runs/yesterday",
            "retry_failed=false",
        ]
    )
    from_python = SuiteConfig(
        name="support",
        simulator="default",
        assistant="http://127.0.0.1:8000/v1",
        assistant_model="bot",
        intents=tmp_path / "intents.txt",
        personas=["Terse."],
        n_per_intent=2,
        max_turns=5,
        seed=3,
        out=Path("runs/today"),
        judge=Judge(endpoint="http://127.0.0.1:8001/v1", model="judge", rubric="Solved it."),
        thresholds=Thresholds(min_success=0.7, max_assistant_errors=0.1),
        intent_thresholds=Thresholds(min_user_ended=0.5),
        guardrails=Guardrails(min_words=2),
        compare=Path("runs/yesterday"),
        retry_failed=False,
    )
    assert from_yaml == from_flags == from_words == from_python
    assert to_dict(from_yaml)["thresholds"] == {
        "min_success": 0.7,
        "min_user_ended": None,
        "max_assistant_errors": 0.1,
        "max_mean_user_turns": None,
    }


def test_defaults_gate_on_assistant_errors_only(tmp_path):
    config = suite_config(["simulator=default", "assistant=hf:default", f"intents=[{BOOKING}]"])
    assert config.thresholds == Thresholds(max_assistant_errors=0.0) and config.intent_thresholds == Thresholds()
    assert (config.judge, config.out, config.compare, config.fresh, config.retry_failed) == (
        None,
        Path("out/test"),
        None,
        False,
        True,
    )


def test_intents_and_personas_inline_named_and_thresholds_per_intent(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "simulator: default\nassistant: hf:default\n"
        f"intents:\n  - {BOOKING}\n  - name: refund\n    intent: {REFUND}\n    thresholds: {{min_success: 0.9}}\n"
        f"  - {BOOKING}\n  - {REFUND}\n"
        "personas:\n  - Writes short messages, all lowercase, no greetings.\n"
        "  - {name: formal, persona: Writes formally.}\n"
        "intent_thresholds: {min_success: 0.5, max_mean_user_turns: 4}\n"
    )
    config = suite_config([str(suite)])
    assert config.intents[1] == SuiteIntent(name="refund", intent=REFUND, thresholds=Thresholds(min_success=0.9))
    assert config.personas[1] == SuitePersona(name="formal", persona="Writes formally.")
    cases = intent_cases(config)
    # A repeated text is one case; a named intent keeps its name; an unnamed one is called by its first words.
    assert [c.name for c in cases] == ["book a table", "refund"] and [c.intent for c in cases] == [BOOKING, REFUND]
    # Intent thresholds: the suite's intent_thresholds, with the keys an intent sets replaced.
    assert cases[0].thresholds == Thresholds(min_success=0.5, max_mean_user_turns=4)
    assert cases[1].thresholds == Thresholds(min_success=0.9, max_mean_user_turns=4)
    assert [p.name for p in persona_cases(config)] == ["Writes short messages, all lowercase, no greetings", "formal"]
    long = SuiteConfig(simulator="default", assistant="hf:default", intents=[REFUND, REFUND.replace("water", "tea")])
    assert [c.name for c in intent_cases(long)] == [
        "get a refund for a kettle that arrived …",
        "get a refund for a kettle that arrived … (2)",
    ]
    assert persona_cases(long)[0].name == "no persona" and persona_cases(long)[0].persona is None


@pytest.mark.parametrize(
    "words, message",
    [
        (["thresholds.min_success=1.5"], r"`min_success`.* must be at most 1, not 1.5."),
        (
            ["--intent-thresholds.max-assistant-errors", "-0.1"],
            r"`max_assistant_errors`.* must be at least 0, not -0.1.",
        ),
        (
            ["thresholds.min_sucess=0.5"],
            r"Unknown key `thresholds.min_sucess` on the command line; did you mean `thresholds.min_success`\?",
        ),
        (["--judge.model", "m"], r"Set both judge.endpoint and judge.model, or leave the judge out \(--no-judge\)."),
        (
            ["--judge.max_tokens", "0", "--judge.endpoint", "http://x/v1", "--judge.model", "m"],
            r"`max_tokens`.* must be at least 1, not 0.",
        ),
        (["intents=[{name: a}]"], r"`intent`.* must not be empty."),
        (["intents=[{intent: x, nme: a}]"], r"Unknown key `nme` under `intents`.*did you mean `name`\?"),
        (["--n-per-intent", "0"], r"`n_per_intent`.* must be at least 1, not 0."),
    ],
)
def test_bad_suite_values_are_one_sentence_naming_the_key(words, message):
    with pytest.raises(UserError, match=message):
        suite_config(["simulator=default", "assistant=hf:default", f"intents=[{BOOKING}]", *words])


def test_the_documented_ci_example_is_a_valid_suite_and_workflow():
    import shlex

    import yaml

    folder = Path(__file__).parents[1] / "docs" / "ci"
    workflow = yaml.safe_load((folder / "github-actions.yml").read_text())
    steps = workflow["jobs"]["simulated-users"]["steps"]
    [command] = [step["run"] for step in steps if step.get("run", "").startswith("userlm test")]
    # The workflow's command line, with the served model's folder for $MODEL_DIR, is a valid suite.
    words = shlex.split(command.replace("$MODEL_DIR", "/models/smollm2"))[2:]
    config = suite_config([str(Path(__file__).parents[1] / w) if w.endswith(".yaml") else w for w in words])
    assert (config.assistant_model, config.judge.model, config.progress) == (
        "/models/smollm2",
        "/models/smollm2",
        False,
    )
    assert [c.name for c in intent_cases(config)] == ["recipe", "python-bug", "trip", "email"]
    assert [p.name for p in persona_cases(config)] == ["terse", "detailed"] and config.n_per_intent == 2
    # The assistant the job starts is the one the suite talks to.
    [start] = [step["run"] for step in steps if "transformers serve" in step.get("run", "")]
    assert "--port 8000" in start and config.assistant == "http://127.0.0.1:8000/v1" == config.judge.endpoint
    assert any(
        step.get("uses", "").startswith("mikepenz/action-junit-report")
        and step["with"]["report_paths"] == "out/suite/junit.xml"
        for step in steps
    )


@pytest.mark.parametrize(
    "answer, success, reason",
    [
        # Answers SmolLM2-135M gave as the judge of docs/ci/suite.yaml, and the form a capable judge writes.
        ("YES: the assistant gave a full recipe with steps.", True, "the assistant gave a full recipe with steps."),
        ("No, the conversation did not succeed. The assistant rambled.", False, "the conversation did not succeed."),
        ("No", False, ""),
        (
            "The conversation failed because it ended in a non-answer. It went on.",
            False,
            "The conversation failed because it ended in a non-answer.",
        ),
        ("The conversation succeeded.", True, "The conversation succeeded."),
        ("The conversation has not succeeded.", None, None),
        ("The user's goal: You are a user chatting with an assistant", None, None),
    ],
)
def test_judge_answers_to_verdicts(answer, success, reason):
    from userlm.infer.suite.judge import parse_judgement

    verdict = parse_judgement(answer)
    assert verdict["success"] is success
    if reason is not None:
        assert verdict["reason"] == reason
    else:
        assert verdict["reason"].startswith("the judge's answer holds no YES or NO")

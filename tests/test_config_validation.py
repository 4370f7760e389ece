"""Every stage's config against wrong types, NaN, negative and empty values (issue 11).

For every key of every config a command reads (nested sections included, and the TRL keys
training recipes use most), a value drawn from a hostile mix must either build a valid
config or be refused with one sentence (a UserError): never another exception. A table then
pins what must be refused: NaN, infinity, text, a mapping or a list for a number; a value
below a declared lower bound; an empty text where a text is required.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from userlm.config import Config, config_keys, from_dict, nested_config_class
from userlm.errors import UserError

INTENT = "You are a user chatting with an assistant language model to test."
# Keys of TRL's SFTConfig that recipes set most; the rest of its ~200 keys go through the same check.
TRL_KEYS = (
    "learning_rate",
    "max_steps",
    "max_length",
    "per_device_train_batch_size",
    "num_train_epochs",
    "warmup_steps",
    "save_steps",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config-validation")
    (folder / "logs.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    )
    (folder / "test.jsonl").write_text("")
    (folder / "validation.jsonl").write_text("")
    return folder


def stage_configs(folder: Path) -> dict[type, dict]:
    """Each config a command reads, with a minimal valid mapping (its required keys)."""
    from userlm.data_prep.config import PrepConfig
    from userlm.evaluation.calibration import CalibrateConfig
    from userlm.evaluation.config import EvalConfig
    from userlm.evaluation.extrinsic.config import ExtrinsicConfig, SimulatorEntry
    from userlm.infer.config import ChatConfig, SimulateConfig
    from userlm.infer.guardrails import Guardrails
    from userlm.infer.serve.server import ServeConfig
    from userlm.infer.suite.config import Judge, SuiteConfig, SuiteIntent, SuitePersona, Thresholds
    from userlm.infer.synth.config import SynthConfig
    from userlm.quickstart import QuickstartConfig
    from userlm.train.config import MergeConfig, TrainConfig

    return {
        PrepConfig: {"inputs": [str(folder / "logs.jsonl")], "out": str(folder / "prep")},
        TrainConfig: {
            "model_name_or_path": str(folder / "model"),
            "dataset_path": str(folder / "prep"),
            "template": "chatml",
            "output_dir": str(folder / "train"),
        },
        MergeConfig: {"adapter": str(folder), "out": str(folder / "merged")},
        SimulateConfig: {
            "simulator": "default",
            "assistant": "hf:default",
            "intents": [INTENT],
            "out": str(folder / "sim.jsonl"),
        },
        ChatConfig: {"simulator": "default", "intent": INTENT},
        ServeConfig: {"simulator": "default"},
        SuiteConfig: {"simulator": "default", "assistant": "hf:default", "intents": [INTENT]},
        SuiteIntent: {"intent": INTENT},
        SuitePersona: {"persona": "Writes short messages."},
        Judge: {"endpoint": "http://127.0.0.1:9/v1", "model": "judge"},
        Thresholds: {},
        EvalConfig: {
            "checkpoints": ["base=default@chatml"],
            "data": str(folder / "test.jsonl"),
            "out": str(folder / "eval"),
        },
        CalibrateConfig: {"simulator": "default@chatml", "data": str(folder / "validation.jsonl")},
        SynthConfig: {"simulator": "default", "assistant": "hf:default", "intents": [INTENT]},
        ExtrinsicConfig: {"simulators": ["default"], "assistant": "hf:default"},
        SimulatorEntry: {"simulator": "default"},
        QuickstartConfig: {},
        Guardrails: {},
    }


# Options shared by several commands: each is checked through the commands that include it.
MIXINS = {"SimulatorOptions", "AssistantOptions", "ConversationOptions", "EndpointOptions"}


def keys_of(cls) -> list[tuple[str, typing.Any, dict]]:
    return [
        (key, annotation, metadata)
        for key, (annotation, metadata, shown) in config_keys(cls).items()
        if (shown or key in TRL_KEYS) and not (nested_config_class(annotation) is not None and "." not in key)
    ]


def config_classes() -> list[type]:
    import userlm.infer.serve.server  # noqa: F401  (every module that defines a config)
    import userlm.infer.suite.config  # noqa: F401
    import userlm.quickstart  # noqa: F401

    return sorted(stage_configs(Path(".")), key=lambda cls: cls.__name__)


def with_value(base: dict, key: str, value) -> dict:
    mapping = dict(base)
    head, dot, rest = key.partition(".")
    mapping.update({head: {rest: value}} if dot else {key: value})
    return mapping


def union_members(annotation) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def is_number(annotation) -> bool:
    members = union_members(annotation)
    return any(a in (int, float) for a in members) and not any(
        a in (str, Path) or typing.get_origin(a) is typing.Literal for a in members
    )


def shaped(annotation, number):
    """`number` in the shape the key takes: one value, or each item of a list or a fixed tuple."""
    members = union_members(annotation)
    for member in members:
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return [number] * len(args)
        if origin in (list, tuple):
            return [number]
    return number


def one_sentence(error: UserError) -> bool:
    text = str(error).strip()
    return bool(text) and "\n" not in text and "Traceback" not in text


HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", " ", "nan", "-1", "inf", "fast"]),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_hostile_value_for_any_key_is_a_config_or_one_sentence(cls, folder, data):
    base = stage_configs(folder)[cls]
    from_dict(cls, base)  # the minimal mapping is valid, so a refusal below is the hostile value's
    key, _, _ = data.draw(st.sampled_from(keys_of(cls)), label="key")
    value = data.draw(HOSTILE, label="value")
    try:
        from_dict(cls, with_value(base, key, value))
    except UserError as error:
        assert one_sentence(error), f"{cls.__name__}.{key}={value!r}: {error}"


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_numbers_refuse_nan_infinity_text_mappings_and_lists(cls, folder):
    base = stage_configs(folder)[cls]
    numbers = [key for key, annotation, _ in keys_of(cls) if is_number(annotation)]
    for key in numbers:
        for bad in (math.nan, math.inf, -math.inf, "fast", {"a": 1}, [1, 2]):
            with pytest.raises(UserError, match=f"`{key.split('.')[-1]}`") as raised:
                from_dict(cls, with_value(base, key, bad))
            assert one_sentence(raised.value)


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_values_below_a_lower_bound_and_empty_required_texts_are_refused(cls, folder):
    base = stage_configs(folder)[cls]
    for key, annotation, metadata in keys_of(cls):
        if is_number(annotation) and "min" in metadata:
            with pytest.raises(UserError, match="must be at least"):
                from_dict(cls, with_value(base, key, shaped(annotation, metadata["min"] - 1)))
        if is_number(annotation) and "above" in metadata:
            with pytest.raises(UserError, match="must be more than"):
                from_dict(cls, with_value(base, key, shaped(annotation, metadata["above"])))
        if metadata.get("nonempty"):
            with pytest.raises(UserError, match="must not be empty|must be"):
                from_dict(cls, with_value(base, key, ""))


def test_counts_that_users_set_most_are_bounded():
    """The keys of the hostile-user probes: each has a lower bound, so a negative value is refused."""
    from userlm.data_prep.config import PrepConfig
    from userlm.evaluation.config import EvalConfig
    from userlm.infer.config import SimulateConfig

    for cls, key in (
        (PrepConfig, "min_chars"),
        (SimulateConfig, "max_turns"),
        (SimulateConfig, "assistant_max_tokens"),
        (SimulateConfig, "max_new_tokens"),
        (EvalConfig, "batch_size"),
        (EvalConfig, "max_new_tokens"),
    ):
        assert "min" in config_keys(cls)[key][1] or "above" in config_keys(cls)[key][1], f"{cls.__name__}.{key}"


def test_training_refuses_the_values_that_used_to_pass(folder):
    from userlm.train.config import TrainConfig

    base = stage_configs(folder)[TrainConfig]
    for key, bad, message in (
        ("learning_rate", "fast", "`learning_rate`"),
        ("max_steps", -3, "`max_steps`"),
        ("learning_rate", math.nan, "`learning_rate`"),
    ):
        with pytest.raises(UserError, match=message):
            from_dict(TrainConfig, with_value(base, key, bad))


def test_every_config_class_is_covered(folder):
    """A new config must be added to this test with a minimal valid mapping."""
    config_classes()

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    defined = {c for c in subclasses(Config) if c.__module__.startswith("userlm.") and c.__name__ not in MIXINS}
    covered = set(stage_configs(folder))
    assert defined <= covered, sorted(c.__name__ for c in defined - covered)
    for cls, base in stage_configs(folder).items():
        assert dataclasses.is_dataclass(from_dict(cls, base))

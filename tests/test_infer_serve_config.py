"""`userlm serve` names its simulator as `userlm test` and `userlm simulate` do (`--simulator`,
`--adapter`), and the positional word still works (issue 28)."""

from __future__ import annotations

from pathlib import Path

import pytest

from userlm.config import parse_config
from userlm.errors import UserError
from userlm.infer.serve.server import ServeConfig


def parse(*words: str) -> ServeConfig:
    return parse_config(ServeConfig, list(words), prog="userlm serve")


def test_the_simulator_is_a_flag_or_the_word():
    flagged = parse("--simulator", "base", "--adapter", "out/persona", "--port", "8001")
    assert (flagged.simulator, flagged.adapter, flagged.port) == ("base", Path("out/persona"), 8001)
    assert parse("out/persona").simulator == parse("--simulator", "out/persona").simulator == "out/persona"


def test_the_simulator_given_twice_is_one_sentence():
    with pytest.raises(UserError, match=r"^Give the simulator once: as a word or with --simulator, not both\.$"):
        parse("out/a", "--simulator", "out/b")

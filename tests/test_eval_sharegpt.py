"""The offline proxies on the real bundled ShareGPT logs, prepared as the quickstart prepares them:
heuristic intents that do not leak first-turn words (human intent decomposition of the test
split at most 8%), and the offline naturalness detector, trained on the train split, rating
held-out real user turns at least 85% human."""

from __future__ import annotations

import json

import pytest

from userlm.evaluation.metrics import intent_decomposition
from userlm.evaluation.naturalness import naturalness_setup
from userlm.evaluation.subsets import intent_of, read_samples
from userlm.flipped.samples import split_file


@pytest.fixture(scope="module")
def prepped(sharegpt_prep):
    """The session's prep of the bundled file with prep's defaults (heuristic intents): read only."""
    return sharegpt_prep.out_dir


def test_human_intent_decomposition_of_the_test_split_is_at_most_8_percent(prepped):
    samples, _ = read_samples(split_file(prepped, "test"))
    first_turns = [s for s in samples if s["turn_index"] == 0 and not s["is_end"]]
    assert len(first_turns) > 500
    value = 100 * intent_decomposition(
        [s["completion"][0]["content"] for s in first_turns], [intent_of(s) for s in first_turns]
    )
    assert value <= 8.0, value
    # Still specific enough to tell conversations apart: hundreds of distinct intents.
    assert len({intent_of(s) for s in first_turns}) > 300


def test_the_offline_detector_rates_held_out_real_users_human(prepped):
    data = split_file(prepped, "test")
    samples, _ = read_samples(data)
    setup = naturalness_setup(None, data, samples, fit_samples=2000, seed=0)
    assert "trained on the train split" in setup.label
    validation = setup.validation
    assert validation["n_user_turns"] == 2000 and validation["n_assistant_turns"] > 1000
    assert validation["user_turns_rated_human"] >= 85.0, json.dumps(validation)
    assert validation["accuracy"] >= 85.0 and validation["assistant_turns_rated_machine"] >= 85.0, json.dumps(
        validation
    )

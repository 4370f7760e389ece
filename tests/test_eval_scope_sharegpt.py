"""The scope sentence on the real bundled ShareGPT logs, prepared as the quickstart prepares them
(heuristic intents, measured personas, scope_dropout 0.5): prep leaves it out of half the train
split's conversations, every sample of one alike, and evaluation never shows it at the points where
it reads *when* users leave, while obeys scope still reads it."""

from __future__ import annotations

import pytest

from userlm.evaluation.config import EvalConfig
from userlm.evaluation.subsets import draw_subsets, read_samples
from userlm.evaluation.termination import decision_points
from userlm.flipped.format import parse_system_text
from userlm.flipped.samples import iter_conversations, split_file
from userlm.flipped.scope import SCOPES, without_scope


def scoped(text: str) -> bool:
    return any(sentence in text for sentence in SCOPES)


@pytest.fixture(scope="module")
def prepped(sharegpt_quickstart_prep):
    """The session's prep of the bundled file as the quickstart prepares it (scope dropout 0.5): read only."""
    return sharegpt_quickstart_prep


def test_scope_dropout_takes_the_asked_share_of_train_conversations_and_only_those(prepped):
    records = list(iter_conversations(prepped))
    train = [r for r in records if r["meta"]["split"] == "train"]
    dropped = sum(not scoped(r["intent"]) for r in train) / len(train)
    # A hash per conversation: binomial, 14,000 conversations give a standard deviation of 0.004.
    assert len(train) > 10_000 and abs(dropped - 0.5) < 0.02, dropped
    assert all(scoped(r["intent"]) for r in records if r["meta"]["split"] != "train")


def test_every_sample_of_a_conversation_states_what_its_record_states(prepped):
    intents = {r["conversation_id"]: r["intent"] for r in iter_conversations(prepped) if r["meta"]["split"] == "train"}
    samples, _ = read_samples(split_file(prepped, "train"))
    seen = {}
    for sample in samples:
        intent = parse_system_text(sample["prompt"][0]["content"])[0]
        seen.setdefault(sample["conversation_id"], set()).add(intent)
    assert seen.keys() == intents.keys()
    assert all(found == {intents[c]} for c, found in seen.items())


def test_no_scope_sentence_reaches_the_points_where_eval_reads_when_users_leave(prepped):
    data = split_file(prepped, "test")
    samples, _ = read_samples(data)
    assert all(scoped(p["prompt"][0]["content"]) for p in decision_points(samples))  # every one states it before eval
    config = EvalConfig(
        checkpoints=["m=default@chatml"],
        data=data,
        max_sample_chars=1200,
        end_probability_conversations=None,
        termination_conversations=50,
        scope_conversations=16,
    )
    subsets = draw_subsets(samples, config)
    when = subsets.end_points + subsets.termination_points
    assert len(subsets.end_points) > 200 and sum(p["is_end"] for p in subsets.end_points) > 30
    assert not any(scoped(m["content"]) for p in when for m in p["prompt"] if m["role"] == "system")
    # Only the scope went: the intent's request and the persona block are as prep wrote them.
    originals = {(s["conversation_id"], s["turn_index"]): s["prompt"][0]["content"] for s in samples}
    for point in when:
        intent, persona = parse_system_text(originals[(point["conversation_id"], point["turn_index"])])
        assert parse_system_text(point["prompt"][0]["content"]) == (without_scope(intent), persona) and persona
    # Obeys scope reads the same test split with the scope stated: 16 conversations, two points each.
    assert len(subsets.scope_points) == 32 and all(scoped(p["prompt"][0]["content"]) for p in subsets.scope_points)

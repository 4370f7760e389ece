"""The graders and the persona users on the real bundled ShareGPT logs, prepared as the quickstart
prepares them: held-out persona users are drawn without reading the turns they are scored on;
the adherence judge is scored on answers whose labels hold by construction, none of them its
hand labels; the naturalness detector is scored against turns the real SmolLM2 writes as a user."""

from __future__ import annotations

import json

import pytest

from userlm.evaluation.judge import HeuristicJudge
from userlm.evaluation.judge_labels import labelled_answers
from userlm.evaluation.judge_validation import CONSTRUCTIONS, constructed_answers, judge_validation
from userlm.evaluation.persona_fidelity import held_out_users, turns_by_user
from userlm.evaluation.roc import roc_auc
from userlm.evaluation.subsets import conversation_users, read_samples
from userlm.flipped.samples import open_lines, split_file

QUICKSTART_FILTER = "length=very_short,lowercase=often"  # recipes/quickstart.yaml's persona subset


@pytest.fixture(scope="module")
def prepped(sharegpt_quickstart_prep):
    """The session's prep of the bundled file as the quickstart prepares it: read only."""
    return sharegpt_quickstart_prep


@pytest.fixture(scope="module")
def test_split(prepped):
    samples, _ = read_samples(split_file(prepped, "test"))
    return samples


def draw(samples, users, turns_per_user):
    return held_out_users(
        samples,
        users,
        count=8,
        turns_per_user=turns_per_user,
        persona_filter=QUICKSTART_FILTER,
        seed=0,
        fits=lambda prompt: sum(len(m["content"]) for m in prompt) <= 1200,
    )


@pytest.mark.parametrize("turns_per_user", [1, 3])
def test_persona_users_are_drawn_without_reading_the_turns_they_are_scored_on(prepped, test_split, turns_per_user):
    users = conversation_users(split_file(prepped, "test"))
    chosen, counts = draw(test_split, users, turns_per_user)
    assert counts["users_drawn"] == 8 and counts["users_filtered_out"] > 0
    # Every user's scored turns rewritten into the opposite style, long enough to break any size limit.
    scored = {id(s) for turns in turns_by_user(test_split, users).values() for s in turns[0::2][:turns_per_user]}
    loud = "PLEASE, Could You Help Me With This Right Now? " * 40
    rewritten = [{**s, "completion": [{"role": "user", "content": loud}]} if id(s) in scored else s for s in test_split]
    again, counts_again = draw(rewritten, users, turns_per_user)
    assert counts_again == counts
    assert [(u.user, u.reference, u.prompts) for u in again] == [(u.user, u.reference, u.prompts) for u in chosen]
    # What is scored is the rewritten turn itself: the draw did not avoid it.
    assert all(turn == loud for u in again for turn in u.real_turns)


def conversation_turns(samples):
    """conversation_id -> (its user turns, its assistant turns), from the flipped samples."""
    turns = {}
    for s in samples:
        users, assistants = turns.setdefault(s["conversation_id"], (set(), set()))
        users.update(m["content"] for m in s["prompt"] if m["role"] == "user")
        assistants.update(m["content"] for m in s["prompt"] if m["role"] == "assistant")
        users.add(s["completion"][0]["content"])
    return turns


def test_the_constructed_labels_are_what_they_say(test_split):
    answers = constructed_answers(test_split, conversations=100, seed=0)
    assert len(answers) == 400 and {a.construction for a in answers} == set(CONSTRUCTIONS)
    turns = conversation_turns(test_split)
    openings = {s["conversation_id"]: s["completion"][0]["content"] for s in test_split if s["turn_index"] == 0}
    seconds = {s["conversation_id"]: s["completion"][0]["content"] for s in test_split if s["turn_index"] == 1}
    for a in answers:
        users, assistants = turns[a.conversation]
        assert a.label == CONSTRUCTIONS[a.construction][1] and a.probe.kind == CONSTRUCTIONS[a.construction][0]
        assert a.probe.first_turn == openings[a.conversation]
        if a.construction in ("role_user_turn", "intent_own_turn"):
            assert a.reply == seconds[a.conversation]  # the user's own second turn
        elif a.construction == "role_assistant_turn":
            assert a.reply in assistants and a.reply not in users  # an assistant's turn in the user slot
        else:
            # Another user's turn, in the conversation whose opening (its first
            # words) the assistant proposed to talk about.
            assert [
                cid
                for cid, opening in openings.items()
                if cid != a.conversation
                and a.reply == seconds.get(cid)
                and " ".join(opening.split()).startswith(a.probe.diversion)
            ]
            assert a.reply not in users and a.probe.diversion in a.probe.assistant


def test_the_judge_is_scored_out_of_sample_on_labels_disjoint_from_its_rule_writing_set(prepped, test_split):
    validation = judge_validation(HeuristicJudge(), test_split, conversations=100, seed=0)
    answers = constructed_answers(test_split, conversations=100, seed=0)
    hand = labelled_answers()
    hand_texts = {r for _, r, _ in hand} | {p.first_turn for p, _, _ in hand} | {p.assistant for p, _, _ in hand}
    assert not hand_texts & (
        {a.reply for a in answers} | {a.probe.first_turn for a in answers} | {a.probe.assistant for a in answers}
    )
    # Drawn from the test split, none of it from the train split.
    train_ids = {json.loads(line)["conversation_id"] for _, line in open_lines(split_file(prepped, "train"))}
    assert not {a.conversation for a in answers} & train_ids
    verdicts = HeuristicJudge().judge([a.probe for a in answers], [a.reply for a in answers])
    right = [v == a.label for a, v in zip(answers, verdicts)]
    assert validation["value"] == pytest.approx(100 * sum(right) / len(right)) and validation["n"] == 400
    assert validation["unit"] == "conversation" and validation["units"] == 100
    assert validation["ci"][0] < validation["value"] < validation["ci"][1]
    assert validation["labels"].startswith("out of sample")
    # The in-sample figure is kept beside it, labelled so: 40 of the 46 hand labels.
    assert validation["in_sample"]["labels"].startswith("in-sample")
    assert (validation["in_sample"]["value"], validation["in_sample"]["n"]) == (pytest.approx(100 * 40 / 46), 46)


def test_the_naturalness_detector_is_scored_against_turns_the_real_smollm2_writes_as_a_user(prepped, test_split):
    from userlm.evaluation.config import EvalConfig
    from userlm.evaluation.naturalness import naturalness_setup
    from userlm.evaluation.naturalness_validation import SEED_OFFSET, SETTINGS, model_written_validation, setting_prompt
    from userlm.evaluation.scoring import generate_texts
    from userlm.infer.simulator import UserSimulator

    data = split_file(prepped, "test")
    setup = naturalness_setup(None, data, test_split, fit_samples=300, seed=0)
    scored: list[str] = []

    def detector(texts):
        scored.extend(texts)
        return setup.detector(texts)

    config = EvalConfig(
        checkpoints=["base=default@chatml"],
        data=data,
        naturalness_model_turns=1,
        naturalness_fit_samples=40,
        max_new_tokens=6,
        progress=False,
    )
    result = model_written_validation(detector, setup.held_out, config)
    assert (
        result["real_user_turns"] == 40 and result["model_turns"] == len(SETTINGS) and result["n"] == 40 + len(SETTINGS)
    )
    # The model-written turns are the prompted SmolLM2's own, one per setting, regenerated here.
    written = scored[40 : 40 + len(SETTINGS)]
    real = scored[:40]
    intent = next(s for s in test_split if s["turn_index"] == 0 and s["completion"][0]["content"] == real[0])
    simulator = UserSimulator.load("default", template="chatml")
    for text, instruction in zip(written, SETTINGS.values()):
        assert [text] == generate_texts(
            simulator, [setting_prompt(intent, instruction)], config, seed=config.seed + SEED_OFFSET, desc=""
        )
    assert not set(written) & {s["completion"][0]["content"] for s in test_split}
    scores = setup.detector(real + written)
    assert result["value"] == pytest.approx(roc_auc(scores, [True] * 40 + [False] * len(SETTINGS)))
    assert result["informative"] == (result["value"] >= 0.8)
    assert ("uninformative" in result["verdict"]) != result["informative"]


def test_the_naturalness_row_is_called_uninformative_in_words_below_an_auc_of_0_8():
    from userlm.evaluation.report_details import model_written_note, row_flag

    checked = {
        "value": 0.7,
        "n": 40,
        "ci": [0.6, 0.8],
        "real_user_turns": 30,
        "model_turns": 10,
        "model": "m",
        "by_setting": {},
        "informative": False,
        "verdict": "uninformative: the detector cannot tell",
    }
    results = {"validation": {"naturalness_detector": {"model_written": checked}}}
    assert row_flag(results, "naturalness") == " (uninformative)" and row_flag(results, "persona_fidelity") == ""
    assert model_written_note(checked).startswith(
        "UNINFORMATIVE ROW. "
    ) and "ROC AUC 0.70 [0.60, 0.80], n 40" in model_written_note(checked)
    checked.update(value=0.9, informative=True)
    assert row_flag(results, "naturalness") == "" and not model_written_note(checked).startswith("UNINFORMATIVE")

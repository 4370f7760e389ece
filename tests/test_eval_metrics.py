"""The word metrics, the judges' rules and the naturalness baseline on hand-computed examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.eval_models import always_human
from userlm.errors import UserError
from userlm.evaluation import metrics
from userlm.evaluation.config import CheckpointSpec, EvalConfig, parse_checkpoint
from userlm.evaluation.judge import HeuristicJudge, parse_verdict
from userlm.evaluation.metrics import word_metrics
from userlm.evaluation.naturalness import OfflineDetector, human_share, load_detector, naturalness_setup
from userlm.evaluation.probes import build_probes
from userlm.evaluation.subsets import intent_of
from userlm.flipped.format import END_MARKER, system_text

INTENT = "You are a user chatting with an assistant language model to fix a broken Python script."


def test_word_tokenisation():
    assert metrics.words("Don't STOP-me now, it's 3pm") == ["don't", "stop", "me", "now", "it's", "3pm"]


def test_first_turn_diversity_hand_computed():
    # Sets {a,b,c}, {a,b,d}, {x,y}: Jaccard 2/4, 0, 0 -> mean 1/6 -> diversity 5/6.
    assert metrics.pairwise_diversity(["a b c", "A b d", "x y"]) == pytest.approx(5 / 6)
    assert metrics.pairwise_diversity(["same words", "Same words!"]) == 0.0
    with pytest.raises(ValueError):
        metrics.pairwise_diversity(["alone"])


def test_intent_decomposition_hand_computed():
    # Content words of the turn {fix, python, script, please}; of the intent without its prefix
    # {fix, broken, python, script}: 3 of 4 shared.
    assert metrics.intent_overlap("Fix my Python script please", INTENT) == pytest.approx(0.75)
    # "language model" is in the fixed prefix only, which is removed before comparing.
    assert metrics.intent_overlap("which language model is this", INTENT) == 0.0
    # A turn without content words copies nothing.
    assert metrics.intent_overlap("is it?", INTENT) == 0.0
    assert metrics.intent_decomposition(
        ["Fix my Python script please", "hello there"], [INTENT, INTENT]
    ) == pytest.approx(0.375)


def test_termination_f1_hand_computed():
    # tp 1 (first), fp 2 (second, last), fn 1 (third): P 1/3, R 1/2, F1 2/(2+2+1) = 0.4.
    result = metrics.f1_for_end([True, True, False, False, True], [True, False, True, False, False])
    assert (result["tp"], result["fp"], result["fn"]) == (1, 2, 1)
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx(0.4)
    assert metrics.f1_for_end([False, False], [True, False])["f1"] == 0.0


def test_distinct_n_and_within_intent_diversity_hand_computed():
    # Unigrams a b a a b: 2 distinct of 5. Bigrams (a b) (b a) (a b): 2 of 3.
    assert metrics.distinct_n(["a b a", "a b"], 1) == pytest.approx(0.4)
    assert metrics.distinct_n(["a b a", "a b"], 2) == pytest.approx(2 / 3)
    assert metrics.distinct_n(["a"], 2) == 0.0
    # Group 1: Jaccard({a,b},{a,c}) = 1/3 -> 2/3; group 2: identical -> 0; mean 1/3.
    within = word_metrics(["a", "b"], [INTENT, INTENT + " twice"], [["a b", "a c"], ["x", "x"]], seed=0)[
        "within_intent_diversity"
    ]
    assert within["value"] == pytest.approx(100 / 3) and within["n"] == 2 and within["unit"] == "intent"


def test_word_metrics_leave_out_and_count_end_turns():
    result = word_metrics(
        ["a b c", END_MARKER, "a b d"],
        [INTENT, INTENT + " b", INTENT + " c"],
        [["a b", "a c", END_MARKER], [END_MARKER, "x"]],
        seed=0,
    )
    assert result["ended_at_first_turn"] == 1
    # Two turns, one pair: every resample of the two intents that keeps both draws that one pair.
    assert result["first_turn_diversity"]["value"] == pytest.approx(50.0) and result["first_turn_diversity"]["n"] == 2
    assert result["first_turn_diversity"]["items"]["ids"] == [INTENT, INTENT + " c"]
    assert result["within_intent_diversity"]["value"] == pytest.approx(200 / 3)
    assert result["within_intent_diversity"]["intents_left_out"] == 1


def test_parse_checkpoint():
    assert parse_checkpoint("sim=out/run") == CheckpointSpec("sim", Path("out/run"), None)
    assert parse_checkpoint("base=default@chatml") == CheckpointSpec("base", Path("default"), "chatml")
    # An @ that does not name a template belongs to the path.
    assert parse_checkpoint("x=/tmp/a@b") == CheckpointSpec("x", Path("/tmp/a@b"), None)
    with pytest.raises(UserError):
        parse_checkpoint("no-name")


def test_the_intent_is_read_without_the_persona():
    # A blank line inside the intent is folded by system_text, so the persona still parses apart.
    system = system_text(INTENT + "\n\nIt prints a traceback.", "Writes short, lowercase turns.")
    sample = {"prompt": [{"role": "system", "content": system}], "completion": [{"role": "user", "content": "help"}]}
    assert intent_of(sample) == INTENT + "\nIt prints a traceback."
    diversion = build_probes([sample], "intent", 1, seed=0)[0]
    assert diversion.intent == intent_of(sample)
    # The simulator still sees the whole system message, persona included.
    assert diversion.prompt[0]["content"] == system and system.endswith("Writes short, lowercase turns.")


def probe(kind):
    sample = {
        "prompt": [{"role": "system", "content": INTENT}],
        "completion": [{"role": "user", "content": "my python script crashes"}],
    }
    return build_probes([sample], kind, 1, seed=0)[0]


def test_heuristic_judge_role():
    role = probe("role")
    assert role.prompt[-1] == {"role": "assistant", "content": role.assistant}
    judge = HeuristicJudge()
    replies = [
        "no idea, thats why im asking you",
        "Certainly! Here is how you can fix the script.",
        "As an AI language model, I think you should check the imports.",
        END_MARKER,
        "1. Check the traceback\n2. Read the error\n" + "word " * 70,
    ]
    assert judge.judge([role] * 5, replies) == [True, False, False, True, False]


def test_heuristic_judge_intent():
    diversion = probe("intent")
    topic = diversion.diversion
    assert topic in diversion.assistant
    judge = HeuristicJudge()
    replies = [
        "no, i need my python script fixed first",
        "sure, lets do that!",
        f"tell me about {topic}",
        "not now, back to the crash please",
        "it still throws an error on line 3",
        "why not!",
        "that's a good suggestion. can you tell me more about the beach there.",
    ]
    assert judge.judge([diversion] * 7, replies) == [True, False, False, True, True, False, False]


def test_parse_verdict():
    assert parse_verdict("YES.") is True
    assert parse_verdict(" no, it does not") is False
    assert parse_verdict("maybe") is None


def test_offline_detector_separates_users_from_assistants():
    users = ["how do i sort a list", "thanks! what about reverse", "fix my sql pls", "whats the capital of peru"]
    assistants = [
        "Certainly! To sort a list in Python, use the built-in sorted() function:\n\n"
        "1. Call sorted(xs).\n2. Pass reverse=True.",
        "Here is a corrected version of your query, with the typo fixed and the table name quoted.",
        "The capital of Peru is Lima. It is also the largest city in the country, with about ten million people.",
    ]
    detector = OfflineDetector(users, assistants, "hand-written turns")
    assert human_share(detector, ["whats a good name for my cat", "ok thanks"]) == 1.0
    assert (
        human_share(
            detector, ["Certainly! Here are three options:\n\n1. Luna.\n2. Milo.\n3. Bella, a classic, elegant choice."]
        )
        == 0.0
    )
    # Only the opening words count: a turn cut at a token budget reads like its uncut self.
    long_answer = "Here is a corrected version of your query. " * 20
    assert detector([long_answer]) == pytest.approx(detector([" ".join(long_answer.split()[:30])]))
    assert "trained on hand-written turns" in detector.label


def test_without_a_train_split_the_detector_is_fitted_on_half_the_test_conversations(eval_test_file):
    import json

    samples = [json.loads(line) for line in eval_test_file.read_text().splitlines()]
    setup = naturalness_setup(None, eval_test_file, samples, fit_samples=100, seed=0)
    # Fitted on the conversations whose id hashes even (e4 alone here: 2 user and 2 assistant turns) and
    # validated on the others: 6 real user turns and 5 assistant turns it never saw.
    assert "validated on the other half: 2 user turns, 2 assistant turns" in setup.label
    assert setup.validation["n_user_turns"] == 6 and setup.validation["n_assistant_turns"] == 5
    # A named detector is validated the same way: one that calls everything human is right about half the time.
    named = naturalness_setup("tests.eval_models:always_human", eval_test_file, samples, fit_samples=100, seed=0)
    assert named.detector is always_human and named.label == "detector tests.eval_models:always_human"
    assert (
        named.validation["user_turns_rated_human"] == 100.0 and named.validation["assistant_turns_rated_machine"] == 0.0
    )
    assert named.validation["accuracy"] == pytest.approx(100 * 6 / 11)
    # Too few conversations to hold half out: fitted and validated on all, and it says so.
    lone = [s for s in samples if s["conversation_id"] in ("e1", "e2")]
    assert (
        "validated on its own training turns"
        in naturalness_setup(None, eval_test_file, lone, fit_samples=100, seed=0).label
    )


def test_load_detector_names_what_is_wrong():
    with pytest.raises(UserError, match="module:function"):
        load_detector("no_colon")
    with pytest.raises(UserError, match="check that it is installed"):
        load_detector("no_such_module_xyz:detect")
    assert load_detector("userlm.evaluation.metrics:words") is metrics.words


def test_unusable_lines_are_counted_not_fatal(tmp_path, eval_test_file):
    from userlm.evaluation.subsets import read_samples

    path = tmp_path / "test.jsonl"
    path.write_text(eval_test_file.read_text() + '{"cut off\n{"prompt": []}\n')
    samples, bad = read_samples(path)
    assert len(samples) == len(eval_test_file.read_text().splitlines())
    assert [b["reason"] for b in bad] == ["invalid_json", "not_a_flipped_sample"]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="holds no flipped samples"):
        read_samples(tmp_path / "empty.jsonl")


def test_subsets_cut_conversations_for_termination_by_the_prompt_alone(eval_test_file):
    import json

    from userlm.evaluation.subsets import decision_points, draw_subsets, prompt_chars, sample_chars

    samples = [json.loads(line) for line in eval_test_file.read_text().splitlines()]
    points = decision_points(samples)
    # A limit that keeps e1's first decision point but not its second (its END point): e1 is cut there.
    e1 = sorted((p for p in points if p["conversation_id"] == "e1"), key=lambda p: p["turn_index"])
    limit = prompt_chars(e1[0])
    assert prompt_chars(e1[1]) > limit
    config = EvalConfig(
        checkpoints=["m=default@chatml"],
        data=eval_test_file,
        max_sample_chars=limit,
        first_turn_intents=3,
        probes_per_kind=2,
    )
    subsets = draw_subsets(samples, config)
    kept = [(p["conversation_id"], p["turn_index"]) for p in subsets.termination_points]
    expected = [(p["conversation_id"], p["turn_index"]) for p in points if prompt_chars(p) <= limit]
    assert kept == expected == [(p["conversation_id"], p["turn_index"]) for p in subsets.end_points]
    assert ("e1", e1[0]["turn_index"]) in kept and ("e1", e1[1]["turn_index"]) not in kept
    assert subsets.counts["decision_points_longer_than_max_chars"] == len(points) - len(expected)
    assert subsets.counts["conversations_without_a_short_decision_point"] == 4 - len({c for c, _ in expected})
    assert len(subsets.first_turns) == 3 and len({s["prompt"][0]["content"] for s in subsets.first_turns}) == 3
    assert all(sample_chars(s) <= limit for s in subsets.perplexity + subsets.probe_openings)


def test_the_heuristic_judge_on_the_shipped_labelled_answers():
    from userlm.evaluation.judge_labels import labelled_answers
    from userlm.evaluation.judge_validation import judge_validation

    items = labelled_answers()
    assert len(items) == 46 and sum(label for _, _, label in items) == 22
    judge = HeuristicJudge()
    missed = [
        reply
        for (probe, reply, label), verdict in zip(
            items, judge.judge([p for p, _, _ in items], [r for _, r, _ in items])
        )
        if verdict != label
    ]
    # Its known blind spots: assistant-style answers without a telltale opening, diversions taken
    # up without naming the topic. Everything else it gets right: 40 of 46.
    assert missed == [
        "You could try wrapping the lookup in a try/except block and logging the missing key.",
        "The main difference is that simple interest is only on the principal, "
        "while compound interest grows exponentially.",
        "To improve your sleep, keep a consistent schedule, avoid screens before bed and limit caffeine.",
        "Tell me more about that instead.",
        "Interesting! How long does it take to grow them?",
        "What is the best time of year to go there?",
    ]
    # The in-sample figure beside the out-of-sample one (no test conversation with a second turn here: none built).
    in_sample = judge_validation(judge, [], conversations=10, seed=0)["in_sample"]
    assert (in_sample["value"], in_sample["n"], in_sample["unjudged"]) == (pytest.approx(100 * 40 / 46), 46, 0)
    assert {k: e["value"] for k, e in in_sample["by_kind"].items()} == {
        "role": pytest.approx(100 * 19 / 22),
        "intent": pytest.approx(100 * 21 / 24),
    }

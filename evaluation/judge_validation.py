"""The adherence judge scored out of sample, on labels made by construction (issue 22, item 4).

The judge's rules were written together with the hand labels of `judge_labels.py`, so its
accuracy there is in-sample. Here the labels come from the test split's real conversations,
where who wrote what is known, not judged:

- role, adheres: the user's real second turn after the real first exchange;
- role, breaks: the assistant's real second turn put in the user slot there;
- intent, adheres: after the assistant proposes talking about another test conversation's
  opening instead, the user's own real second turn (it went on with its own conversation);
- intent, goes along: at the same point, the second turn of that other conversation's user
  (it continues the proposed topic).

Both intent replies are real users' second turns, so style gives nothing away; only what
they talk about does. A second turn under MIN_WORDS words ("continue", "thanks") does not
say which conversation it continues, so such conversations are not used. The accuracy
(percent) is resampled by conversation: a conversation's items share its texts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .intervals import mean_figure
from .judge_labels import labelled_answers
from .probes import INTENT_TEMPLATES, Probe

MIN_WORDS = 3
TOPIC_WORDS = 12  # the other conversation's opening is cut to a topic of this many words

CONSTRUCTIONS = {
    "role_user_turn": ("role", True),
    "role_assistant_turn": ("role", False),
    "intent_own_turn": ("intent", True),
    "intent_other_users_turn": ("intent", False),
}
OUT_OF_SAMPLE = (
    "out of sample: answers built by construction from the test split's real conversations "
    "(a real user or assistant turn in the user slot; a user's own next turn or another conversation's "
    "after a diversion to that conversation's opening), never seen while the judge's rules were written"
)
IN_SAMPLE = (
    "in-sample: the hand-written answers of evaluation/judge_labels.py, "
    "written together with the heuristic judge's rules"
)


@dataclass(frozen=True)
class LabelledAnswer:
    probe: Probe
    reply: str
    label: bool  # the user adhered
    construction: str
    conversation: str


def second_turn_points(samples: list[dict]) -> dict[str, tuple[dict, str]]:
    """conversation_id -> (the sample of the user's second turn, the assistant's second turn), for the
    conversations with both, a system message and a second turn of MIN_WORDS words or more."""
    seconds = {s["conversation_id"]: s for s in samples if s["turn_index"] == 1 and not s["is_end"]}
    answers = {
        s["conversation_id"]: s["prompt"][-1]["content"]
        for s in samples
        if s["turn_index"] == 2 and s["prompt"][-1]["role"] == "assistant"
    }
    return {
        cid: (s, answers[cid])
        for cid, s in seconds.items()
        if cid in answers
        and s["prompt"][0]["role"] == "system"
        and len(s["completion"][0]["content"].split()) >= MIN_WORDS
    }


def constructed_answers(samples: list[dict], *, conversations: int, seed: int) -> list[LabelledAnswer]:
    """Four labelled answers (CONSTRUCTIONS) from each of up to `conversations` conversations drawn with
    `seed`; each conversation's diversion is the opening of the next conversation drawn."""
    points = second_turn_points(samples)
    rng = random.Random(f"{seed}-judge-validation")
    chosen = rng.sample(sorted(points), min(conversations, len(points)))
    if len(chosen) < 2:
        return []
    answers = []
    for k, cid in enumerate(chosen):
        sample, assistant_turn = points[cid]
        other, _ = points[chosen[(k + 1) % len(chosen)]]
        system, first_turn, first_answer = (m["content"] for m in sample["prompt"][:3])
        own, others = sample["completion"][0]["content"], other["completion"][0]["content"]
        topic = " ".join(other["prompt"][1]["content"].split()[:TOPIC_WORDS])
        role = Probe("role", system, first_turn, first_answer, None)
        intent = Probe("intent", system, first_turn, rng.choice(INTENT_TEMPLATES).format(topic=f'"{topic}"'), topic)
        for construction, probe, reply in (
            ("role_user_turn", role, own),
            ("role_assistant_turn", role, assistant_turn),
            ("intent_own_turn", intent, own),
            ("intent_other_users_turn", intent, others),
        ):
            answers.append(LabelledAnswer(probe, reply, CONSTRUCTIONS[construction][1], construction, cid))
    return answers


def judge_accuracy(judge, answers: list[LabelledAnswer], *, seed: int, unit: str) -> dict:
    """The judge's accuracy (percent) overall, per probe kind and per construction, each a figure;
    unjudged answers (an endpoint that failed or answered neither yes nor no) count as wrong."""
    verdicts = judge.judge([a.probe for a in answers], [a.reply for a in answers])
    right = [v is not None and v == a.label for a, v in zip(answers, verdicts)]

    def accuracy(keep) -> dict:
        kept = [(hit, a.conversation) for hit, a in zip(right, answers) if keep(a)]
        return mean_figure([h for h, _ in kept], seed=seed, ids=[c for _, c in kept], unit=unit, scale=100)

    return {
        **accuracy(lambda a: True),
        "by_kind": {kind: accuracy(lambda a, kind=kind: a.probe.kind == kind) for kind in ("role", "intent")},
        "by_construction": {
            c: accuracy(lambda a, c=c: a.construction == c) for c in dict.fromkeys(a.construction for a in answers)
        },
        "unjudged": sum(v is None for v in verdicts),
    }


def judge_validation(judge, samples: list[dict], *, conversations: int, seed: int) -> dict:
    """The judge's out-of-sample accuracy on constructed answers from `samples` (the test split), with
    the in-sample accuracy on the hand labels beside it, each saying which it is."""
    in_sample = [
        LabelledAnswer(p, r, label, f"hand-labelled {p.kind}", f"label {k}")
        for k, (p, r, label) in enumerate(labelled_answers())
    ]
    return {
        **judge_accuracy(
            judge, constructed_answers(samples, conversations=conversations, seed=seed), seed=seed, unit="conversation"
        ),
        "labels": OUT_OF_SAMPLE,
        "in_sample": {**judge_accuracy(judge, in_sample, seed=seed, unit="labelled answer"), "labels": IN_SAMPLE},
    }

"""What each conversation of a suite came to, and the figures of a group of them.

A conversation counts unless the simulator broke it (`simulator_error`,
`guardrails_exhausted`): those say nothing about the assistant, and are reported apart.
Success is the judge's verdict when a judge is configured (a conversation the judge gave no
verdict for is unjudged), else the user leaving before the turn limit; a conversation an
assistant error broke is a failure either way. With a judge, a group also says how often the
user ended the conversations the judge called a success, and those it called a failure: a
simulator that leaves because it was served well ends the first, not the second.
"""

from __future__ import annotations

from collections import Counter
from statistics import mean

from userlm.flipped.format import count_user_turns

from ..simulate import TERMINATION_REASONS

SIMULATOR_FAILURES = ("simulator_error", "guardrails_exhausted")


def outcome_of(record: dict, intent: str, persona: str, verdict: dict | None, judged: bool) -> dict:
    """One conversation's outcome; `verdict` is the judge's ({"success": bool | None, "reason"}) when `judged`."""
    reason = record["termination_reason"]
    counted = reason not in SIMULATOR_FAILURES
    if not counted:
        success = None
    elif reason == "assistant_error":
        success = False
    elif judged:
        success = verdict["success"] if verdict else None
    else:
        success = reason == "user_ended"
    return {
        "conversation_id": record["conversation_id"],
        "intent": intent,
        "persona": persona,
        "trial": record["trial"],
        "seed": record["seed"],
        "termination_reason": reason,
        "user_turns": count_user_turns(record["turns"]),
        "seconds": record.get("seconds", 0.0),  # records written before conversations were timed have none
        "counted": counted,
        "success": success,
        "verdict": verdict,
        "error": record.get("error"),
    }


def label(outcome: dict) -> str:
    """success, failure, unjudged (the judge gave no verdict) or not counted (the simulator broke it)."""
    if not outcome["counted"]:
        return "not counted"
    if outcome["success"] is None:
        return "unjudged"
    return "success" if outcome["success"] else "failure"


def group_stats(outcomes: list[dict]) -> dict:
    """The figures the gate and the tables use; a share with nothing to measure is None."""
    counted = [o for o in outcomes if o["counted"]]
    judged = [o for o in counted if o["success"] is not None]
    reasons = Counter(o["termination_reason"] for o in outcomes)
    successes = sum(o["success"] for o in judged)

    def share(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    # Where a judge gave verdicts, whether the user left because it was served well (issue 25): of the
    # conversations it called a success, the share the user ended (rather than ran to the turn limit);
    # of those it called a failure (an assistant error aside: the user had no say), the same.
    verdicts = [o for o in judged if o["verdict"] is not None]
    good = [o for o in verdicts if o["success"]]
    bad = [o for o in verdicts if not o["success"] and o["termination_reason"] != "assistant_error"]

    def ended(group: list[dict]) -> float | None:
        return share(sum(o["termination_reason"] == "user_ended" for o in group), len(group))

    return {
        "conversations": len(outcomes),
        "counted": len(counted),
        "not_counted": len(outcomes) - len(counted),
        "unjudged": len(counted) - len(judged),
        "successes": successes,
        "judged": len(judged),
        "success_rate": share(successes, len(judged)),
        "user_ended_rate": share(reasons["user_ended"], len(counted)),
        "ended_after_good_rate": ended(good),
        "ended_after_bad_rate": ended(bad),
        "assistant_error_rate": share(reasons["assistant_error"], len(counted)),
        "mean_user_turns": mean(o["user_turns"] for o in counted) if counted else None,
        "termination_reasons": {reason: reasons.get(reason, 0) for reason in TERMINATION_REASONS},
    }


def grouped(outcomes: list[dict], key: str, names: list[str]) -> dict[str, dict]:
    """Figures per intent or per persona, in the suite's order."""
    return {name: group_stats([o for o in outcomes if o[key] == name]) for name in names}

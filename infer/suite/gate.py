"""The gate: each threshold set on the suite or on an intent, checked against its conversations.

A bound that cannot be measured (no conversation counted, or the judge gave no verdict at
all) fails: a gate that passes because nothing was measured would hide a broken run.
"""

from __future__ import annotations

from .config import Thresholds

# threshold -> (figure of `group_stats`, "min" or "max", the figure in words)
BOUNDS = {
    "min_success": ("success_rate", "min", "success rate"),
    "min_user_ended": ("user_ended_rate", "min", "share the user ended"),
    "max_assistant_errors": ("assistant_error_rate", "max", "share of assistant errors"),
    "max_mean_user_turns": ("mean_user_turns", "max", "mean user turns"),
}
# Shares are fractions of small counts; a bound equal to the measured share passes.
TOLERANCE = 1e-9


def check(scope: str, thresholds: Thresholds, stats: dict) -> list[dict]:
    """One check per bound set: {"scope", "threshold", "limit", "measured", "passed", "line"}."""
    checks = []
    for key, (figure, side, words) in BOUNDS.items():
        limit = getattr(thresholds, key)
        if limit is None:
            continue
        measured = stats[figure]
        if measured is None:
            passed = False
            line = f"{scope}: the {words} cannot be measured ({why_unmeasured(stats)}), so {key} {limit:g} fails"
        else:
            passed = measured >= limit - TOLERANCE if side == "min" else measured <= limit + TOLERANCE
            relation = (
                ("is at least" if passed else "is below") if side == "min" else ("is at most" if passed else "is above")
            )
            line = f"{scope}: {words} {measured:.2f}{counts(figure, stats)} {relation} {key} {limit:g}"
        checks.append(
            {"scope": scope, "threshold": key, "limit": limit, "measured": measured, "passed": passed, "line": line}
        )
    return checks


def counts(figure: str, stats: dict) -> str:
    if figure == "success_rate":
        return f" ({stats['successes']} of {stats['judged']} conversations)"
    if figure == "user_ended_rate":
        return f" ({stats['termination_reasons']['user_ended']} of {stats['counted']} conversations)"
    if figure == "assistant_error_rate":
        return f" ({stats['termination_reasons']['assistant_error']} of {stats['counted']} conversations)"
    return f" (over {stats['counted']} conversations)"


def why_unmeasured(stats: dict) -> str:
    if stats["conversations"] == 0:
        return "no conversations"
    if stats["counted"] == 0:
        return f"the simulator broke all {stats['conversations']} conversations"
    return f"the judge gave no verdict for any of {stats['counted']} conversations"

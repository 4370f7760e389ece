"""The tables and notes under a metric's own table in the report: P(end) at both kinds of
decision point, persona fidelity measure by measure, the persona contrast, and how well the
offline proxies (naturalness detector, adherence judge) did on data with known answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from .persona_fidelity import HUMAN_REFERENCE, STYLE_MEASURES


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    # A CSS class per row in the HTML ("published" rows are set apart).
    row_classes: list[str] = field(default_factory=list)


def number(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def interval(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def probability(value) -> str:
    # P(end) of an untrained end marker is around 1e-7: keep three significant digits.
    return "n/a" if value is None else f"{value:.3g}"


def no_model_reference(results: dict, key: str) -> list[tuple[str, dict]]:
    """[(its label, its entry)] for each measured reference of the metric that uses
    no model (evaluation/end_reference.py)."""
    entries = ((results.get("reference") or {}).get(key) or {}).values()
    return [(entry["source"], entry) for entry in entries if entry["value"] is not None]


def termination_details(results: dict) -> list[Table]:
    rows = []
    entries = [
        *((name, c.get("termination_auc")) for name, c in results["checkpoints"].items()),
        *no_model_reference(results, "termination_auc"),
    ]
    for name, entry in entries:
        if entry:
            rows.append(
                [
                    name,
                    number(entry["value"]),
                    interval(entry.get("ci")),
                    interval(entry.get("ci_hanley_mcneil")),
                    probability(entry["mean_at_ends"]),
                    probability(entry["mean_at_continues"]),
                    probability(entry["median_at_ends"]),
                    probability(entry["median_at_continues"]),
                    str(entry["n"]),
                    str(entry["real_end_points"]),
                ]
            )
    headers = [
        "source",
        "ROC AUC",
        "95% interval, by conversation",
        "95% interval, Hanley-McNeil (points independent)",
        "mean P(end), real ends",
        "mean P(end), continues",
        "median P(end), real ends",
        "median P(end), continues",
        "points",
        "real ends",
    ]
    return [Table(headers, rows)] if rows else []


MEASURE_HEADERS = {
    "words_per_turn": "words/turn error",
    "lowercase_start_rate": "lowercase start (pp)",
    "punctuation_rate": "final punctuation (pp)",
    "typo_rate": "typos (pp)",
    "question_rate": "questions (pp)",
    "politeness_rate": "politeness (pp)",
}


def persona_details(results: dict) -> list[Table]:
    entries = [(name, c.get("persona_fidelity")) for name, c in results["checkpoints"].items()]
    entries.append((HUMAN_REFERENCE, results["human"].get("persona_fidelity")))
    rows = [
        [
            name,
            number(e["value"]),
            *(number(e["errors"][m]["value"]) for m in STYLE_MEASURES),
            str(e["n"]),
            str(e["end_turns"]),
        ]
        for name, e in entries
        if e and e["value"] is not None
    ]
    headers = [
        "source",
        "bucket agreement (%)",
        *(MEASURE_HEADERS[m] for m in STYLE_MEASURES),
        "users",
        "END turns left out",
    ]
    return [Table(headers, rows)] if rows else []


CONTRAST_HEADERS = {
    "words_per_turn": "words/turn",
    "lowercase_start_rate": "lowercase start",
    "punctuation_rate": "final punctuation",
    "typo_rate": "typos",
    "politeness_rate": "politeness",
}


def contrast_details(results: dict) -> list[Table]:
    rows = []
    for name, c in results["checkpoints"].items():
        entry = c.get("persona_contrast")
        if not entry or entry["value"] is None:
            continue
        cells = [
            f"{m['terse']:.2f} → {m['elaborate']:.2f} "
            f"({m['difference']:+.2f}{'' if m['as_expected'] else ', not ' + m['expected']})"
            for m in entry["measures"].values()
        ]
        rows.append(
            [
                name,
                *cells,
                f"{entry['as_expected']} of {len(entry['measures'])}",
                f"{entry['elaborate_longer']} of {entry['n']}",
            ]
        )
    measures = next(
        (
            c["persona_contrast"]["measures"]
            for c in results["checkpoints"].values()
            if c.get("persona_contrast", {}).get("measures")
        ),
        {},
    )
    headers = [
        "checkpoint",
        *(f"{CONTRAST_HEADERS[m]} ({entry['expected']})" for m, entry in measures.items()),
        "moved as expected",
        "elaborate turn longer",
    ]
    return [Table(headers, rows)] if rows else []


def with_interval(entry: dict, unit: str = "") -> str:
    """ "70.60% [68.00, 73.12], n 800": a validation figure with its 95% interval and sample size."""
    return f"{number(entry['value'])}{unit} {interval(entry.get('ci')) or '(no interval)'}, n {entry['n']}"


def row_flag(results: dict, key: str) -> str:
    """ " (uninformative)" for the naturalness row when its detector cannot tell
    real users from models writing as users."""
    checked = ((results.get("validation") or {}).get("naturalness_detector") or {}).get("model_written") or {}
    return " (uninformative)" if key == "naturalness" and checked.get("informative") is False else ""


def naturalness_notes(results: dict) -> list[str]:
    v = results["validation"]["naturalness_detector"]
    notes = [model_written_note(v.get("model_written"))]
    if v["accuracy"] is None:
        return notes + ["Against assistant turns: no held-out user and assistant turns to validate on."]
    return notes + [
        f"Against assistant turns, on held-out turns it was not trained on ({v['n_user_turns']} real user turns, "
        f"{v['n_assistant_turns']} assistant turns of the test data): accuracy {v['accuracy']:.1f}%; it rates "
        f"{v['user_turns_rated_human']:.1f}% of the real user turns human and "
        f"{v['assistant_turns_rated_machine']:.1f}% "
        "of the assistant turns machine-written."
    ]


def model_written_note(v: dict | None) -> str:
    """The detector's AUC against models writing as users (naturalness_validation.py), and what it means for the row."""
    if not v or v["value"] is None:
        return (
            "Not validated against models writing as users "
            "(naturalness_model_turns 0): this row's meaning is unchecked."
        )
    settings = "; ".join(f"{name}: {with_interval(e)}" for name, e in v["by_setting"].items())
    return (
        f"{'' if v['informative'] else 'UNINFORMATIVE ROW. '}Detector "
        "validation against models writing as users: ROC AUC "
        f"{with_interval(v)} ({v['real_user_turns']} held-out real first turns "
        f"against {v['model_turns']} first turns by "
        f"{v['model']}; {settings}); {v['verdict']}."
    )


def judge_notes(results: dict) -> list[str]:
    v = results["validation"]["judge"]
    unjudged = f"; {v['unjudged']} left unjudged, counted wrong" if v["unjudged"] else ""
    by_kind = ", ".join(f"{kind} {with_interval(e, unit='%')}" for kind, e in v["by_kind"].items())
    return [
        f"Judge validation {v['labels']}: accuracy {with_interval(v, unit='%')} ({by_kind}{unjudged}).",
        f"Beside it, {v['in_sample']['labels']}: accuracy "
        f"{with_interval(v['in_sample'], unit='%')}; in-sample, so not the figure to trust.",
    ]


def leave_probe_details(results: dict) -> list[Table]:
    """Mean P(end) (%) after each kind of answer, per checkpoint: what good minus bad is made of."""
    kinds = (("after_good", "after a good answer"), ("after_bad", "after a bad one"))
    kinds += (("after_refusal", "after a refusal"), ("after_off_topic", "after an off-topic answer"))
    rows = [
        [name, *(f"{number(e[k]['value'])} {interval(e[k]['ci'])}" if k in e else "n/a" for k, _ in kinds)]
        for name, c in results["checkpoints"].items()
        if (e := c.get("leave_after_good_answer"))
    ]
    return [Table(["checkpoint", *(f"P(end) % {label}" for _, label in kinds)], rows)] if rows else []

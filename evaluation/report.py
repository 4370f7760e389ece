"""The evaluation report: metrics.json, report.md (+ PNG plots beside it) and report.html
(the same tables, plots embedded as base64 PNG), and the summary printed in the terminal.

One section per metric: a table with each checkpoint measured here, the human reference
measured on the same test subsets (for persona fidelity, the real users' split-half
agreement, a human reference; for intent decomposition, the train split's: human_train.py),
a table of the differences between compared checkpoints, reference rows (chance for the ROC AUC) and the paper's
published rows, labelled "published"; a plot; and, where a metric has them, detail
tables and the validation of the offline proxy behind it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from userlm.atomic import atomic_write, write_json
from userlm.summary import Summary

from .differences import checkpoint_differences
from .human_train import SOURCE as TRAIN_SOURCE
from .obeys_scope import CHANCE
from .persona_fidelity import HUMAN_REFERENCE
from .report_details import (
    Table,
    contrast_details,
    judge_notes,
    leave_probe_details,
    naturalness_notes,
    no_model_reference,
    persona_details,
    row_flag,
    termination_details,
)
from .report_plots import plot_contrast, plot_metric, plot_roc

# key, title, short name for the terminal, what it measures, which direction is better
METRICS = (
    (
        "perplexity_with_intent",
        "User-turn perplexity with intent",
        "perplexity, intent",
        "perplexity of the real user turns given the intent",
        "lower",
    ),
    (
        "perplexity_without_intent",
        "User-turn perplexity without intent",
        "perplexity, no intent",
        "the same targets with the system message emptied",
        "lower",
    ),
    (
        "first_turn_diversity",
        "First-turn diversity (%)",
        "first-turn diversity",
        "1 − mean pairwise Jaccard of unigram sets over first turns of distinct intents",
        "higher",
    ),
    (
        "intent_decomposition",
        "Intent decomposition (%)",
        "intent decomposition",
        "mean share of a first turn's non-stopword unigrams found in the intent (prefix removed)",
        "lower",
    ),
    (
        "termination_f1",
        "Termination F1 (%)",
        "termination F1",
        "F1 of END at every decision point against where the real conversation ended, from one sampled turn per "
        "point, the intent's scope sentence taken out; the no-model rows leave each point with the train "
        "split's rate there (their expected F1), the floor a model must beat",
        "higher",
    ),
    (
        "termination_expected_f1",
        "Termination F1 expected from P(end) (%)",
        "termination F1, expected",
        "F1 of END from expected counts when each P(end) point ends with the "
        "probability that sampling (temperature 1, top-p 0.8) "
        "draws the end turn there: the sampled F1 without its luck, on the P(end) points "
        "(no scope sentence); the no-model rows leave "
        "each point with the train split's rate there, the floor a model must beat",
        "higher",
    ),
    (
        "termination_auc",
        "Termination ROC AUC, P(end) as the first token",
        "termination AUC",
        "ROC AUC of the probability the model gives to ending as the first token of its turn, at every decision point, "
        "against where the real conversation ended, the intent's scope sentence taken "
        "out (it states the length); 0.5 is chance, "
        "the no-model rows are the floor a model must beat; no sampling, so no luck",
        "higher",
    ),
    (
        "termination_obeys_scope",
        "Termination obeys scope (%)",
        "obeys scope",
        "share of held-out conversations × stated lengths (a single answer, follow "
        "up once, a few times) where the simulator, "
        "reading the conversation's first two decision points with that length "
        "in its intent, leaves when told (for a few "
        "times: not by turn 2), from the chance that sampling ends each point; a "
        "controllability figure, not when real users leave",
        "higher",
    ),
    (
        "leave_after_good_answer",
        "Leaves after a good answer rather than a bad one (points of P(end))",
        "leaves when served well",
        "mean P(end), in percent, right after a full, correct answer minus right after a refusal or an "
        "off-topic answer to the same intent and first turn (the shipped leave probes, no scope sentence), "
        "paired by intent; above zero: the simulator leaves because it was served well",
        "higher",
    ),
    (
        "role_adherence",
        "Role adherence (%)",
        "role adherence",
        "share of probes (assistant feigns uncertainty) where the simulator stays a user",
        "higher",
    ),
    (
        "intent_adherence",
        "Intent adherence (%)",
        "intent adherence",
        "share of probes (assistant proposes a diversion) where the simulator stays on its intent",
        "higher",
    ),
    (
        "naturalness",
        "Naturalness (%)",
        "naturalness",
        "share of generated first turns the naturalness detector calls human",
        "higher",
    ),
    (
        "persona_fidelity",
        "Persona fidelity (%)",
        "persona fidelity",
        "share of the six style buckets (length, lowercase, punctuation, typos, questions, "
        "politeness) in which a held-out user's turns, "
        "written with that user's persona in the system message, match the user's own measured style",
        "higher",
    ),
    (
        "persona_contrast",
        "Persona contrast (words per turn)",
        "persona contrast",
        "words per turn of first turns under an elaborate persona minus under a terse one (same intents, same seeds)",
        "higher",
    ),
    (
        "within_intent_diversity",
        "Diversity across simulations of one intent (%)",
        "diversity in one intent",
        "1 − mean pairwise Jaccard among first turns simulated for the same intent",
        "higher",
    ),
    (
        "distinct_1",
        "Distinct-1 (%)",
        "distinct-1",
        "distinct unigrams / all unigrams over generated first turns",
        "higher",
    ),
    (
        "distinct_2",
        "Distinct-2 (%)",
        "distinct-2",
        "distinct bigrams / all bigrams over generated first turns",
        "higher",
    ),
)
HUMAN_ROW = "human (this test set, measured)"
HUMAN_ROWS = {
    "persona_fidelity": (HUMAN_REFERENCE, "measured, real users against their own other half"),
    "intent_decomposition": (TRAIN_SOURCE, "measured, real first turns of the train split"),
}
REFERENCE_ROWS = {
    "termination_auc": [("chance", 0.5)],
    "termination_obeys_scope": [("chance: any simulator that ignores the stated length", CHANCE)],
}
DETAILS = {
    "termination_auc": termination_details,
    "persona_fidelity": persona_details,
    "persona_contrast": contrast_details,
    "leave_after_good_answer": leave_probe_details,
}
NOTES = {"naturalness": naturalness_notes, "role_adherence": judge_notes, "intent_adherence": judge_notes}


def format_value(value) -> str:
    if value is None:
        return "n/a"
    # Perplexities of untrained models run to millions; keep the cell short.
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.2f}"


def format_interval(entry: dict | None) -> str:
    ci = (entry or {}).get("ci")
    return f"[{format_value(ci[0])}, {format_value(ci[1])}]" if ci else ""


def format_figure(entry: dict | None) -> str:
    """ "45.52 [41.20, 50.10], n 40": a figure with its 95% interval and its sample size."""
    if entry is None or entry.get("value") is None:
        return "n/a" if entry is not None else ""
    interval = format_interval(entry)
    return f"{format_value(entry['value'])}{' ' + interval if interval else ''}, n {entry['n']}"


def format_difference(entry: dict | None) -> str:
    """ "-22.14 [-30.10, -15.00], n 40, shown", or "not shown" where the 95% interval covers zero."""
    if entry is None:
        return ""
    return (
        f"{entry['value']:+.2f} {format_interval(entry) or '(no interval)'}, n {entry['n']}, "
        f"{'shown' if entry['shown'] else 'not shown'}"
    )


def metric_rows(results: dict, key: str) -> list[dict]:
    """Rows of one metric's table: measured checkpoints (with their difference from the prompted base),
    the measured human reference, references, published figures."""
    rows = []
    differences = (results.get("differences") or {}).get("checkpoints", {})
    for name, checkpoint in results["checkpoints"].items():
        entry = checkpoint.get(key)
        kind = "prompted instruct model" if checkpoint.get("prompted") else "checkpoint"
        rows.append(
            {
                "source": name,
                "kind": f"measured, {kind}",
                "value": entry and entry["value"],
                "n": entry and entry["n"],
                "ci": entry and entry.get("ci"),
                "difference": differences.get(name, {}).get(key),
            }
        )
    human = results["human"].get(key)
    if human is not None:
        source, kind = HUMAN_ROWS.get(key, (HUMAN_ROW, "measured, real user turns"))
        rows.append({"source": source, "kind": kind, "value": human["value"], "n": human["n"], "ci": human.get("ci")})
    for source, entry in no_model_reference(results, key):
        rows.append(
            {
                "source": source,
                "kind": "reference, no model",
                "value": entry["value"],
                "n": entry["n"],
                "ci": entry.get("ci"),
            }
        )
    for source, value in REFERENCE_ROWS.get(key, []):
        rows.append({"source": source, "kind": "reference", "value": value, "n": None})
    for who, value in results["published"]["figures"].get(key, {}).items():
        rows.append({"source": f"{who} (published)", "kind": "published in the paper", "value": value, "n": None})
    return rows


def settings_lines(results: dict) -> list[str]:
    s, d = results["settings"], results["data"]
    persona_users = f"{d.get('users_drawn', 0)} drawn of {d.get('users_eligible', 0)} with two turns or more"
    return [
        f"Test data: {s['data']} ({d['samples']} flipped samples; {d['unusable_lines']} unusable lines; "
        f"{d['samples_longer_than_max_chars']} samples over {s['max_sample_chars']} characters left out of perplexity, "
        f"{d['decision_points_longer_than_max_chars']} decision points whose prompt is "
        "longer left out of termination and P(end), "
        f"each conversation cut there; {d['conversations_without_a_short_decision_point']} "
        "conversations had no shorter one)",
        f"Sample sizes asked for: perplexity {s['perplexity_samples']} samples, first turns "
        f"{s['first_turn_intents']} distinct intents "
        f"({d['distinct_intents_available']} available), termination {s['termination_conversations']} conversations "
        f"({d['termination_conversations']} drawn), P(end) {s['end_probability_conversations'] or 'all'} conversations "
        f"({d['end_probability_conversations']} drawn), probes {s['probes_per_kind']} per "
        "kind (openings within the character limit), "
        f"simulations {s['diversity_intents']} intents × {s['simulations_per_intent']}, "
        f"persona fidelity {s['persona_users']} users "
        f"({persona_users}; users "
        f"{'from the conversations file' if d['users_known'] else 'unknown, each conversation stands in'}"
        f"{', filter ' + s['persona_filter'] if s['persona_filter'] else ''}) × at "
        f"most {s['persona_turns_per_user']} turns, "
        f"persona contrast {s['contrast_intents']} intents × 2 personas; the n column gives what was measured",
        f"Seeds: {s['seeds']}",
        f"Perplexity and P(end) passes: {s['teacher_forced_passes']}",
        f"Word tokenisation: {s['word_tokenisation']}",
        f"Perplexity: {s['perplexity']}",
        f"P(end): {s['end_probability']}",
        f"Generation: {s['generation']}, at most {s['max_new_tokens']} new tokens "
        f"({s['termination_max_new_tokens']} for termination decisions)",
        f"Adherence judge: {s['judge']}",
        f"Naturalness detector: {s['naturalness_detector']}",
        f"Published rows: {results['published']['source']}; measured on the "
        "paper's data and sample sizes, not this test set",
    ]


def checkpoint_lines(results: dict) -> list[str]:
    lines = []
    for name, c in results["checkpoints"].items():
        over = c.get("left_out_over_context") or {}
        left_out = (
            f", left out as longer than its context: {', '.join(f'{n} {k}' for k, n in over.items())}" if over else ""
        )
        stages = ", ".join(f"{stage} {s} s" for stage, s in c.get("stage_seconds", {}).items())
        lines.append(
            f"{name}: {c['path']}, template {c['template']}{' (prompted instruct model)' if c['prompted'] else ''}, "
            f"tokenizer {c['tokenizer']}, {c['ended_at_first_turn']} first turns were "
            f"END{left_out}, {c['seconds']} s ({stages})"
        )
    return lines


def example_lines(results: dict) -> list[str]:
    """A few generated turns per checkpoint, so a reader can see what the numbers describe."""
    lines = []
    for name, c in results["checkpoints"].items():
        for e in c["examples"]:
            lines.append(f'{name}, first turn for "{e["intent"]}": {e["first_turn"]!r}')
        for kind in ("role", "intent"):
            for e in c.get(f"{kind}_adherence", {"examples": []})["examples"][:1]:
                lines.append(
                    f"{name}, {kind} probe, assistant: {e['assistant']!r} → "
                    f"user: {e['reply']!r} (adhered: {e['adhered']})"
                )
        for e in c.get("persona_contrast", {}).get("examples", [])[:1]:
            lines.append(
                f"{name}, the same intent under the terse persona: {e['terse']!r}; "
                f"under the elaborate one: {e['elaborate']!r}"
            )
        for e in c.get("persona_fidelity", {}).get("examples", [])[:1]:
            lines.append(
                f"{name}, held-out user ({', '.join(e['persona_reference'].values())}): real "
                f"{e['real']!r}; generated {e['generated']!r}"
            )
    return lines


@dataclass
class Section:
    key: str
    title: str
    text: str
    tables: list[Table]
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, PNG)
    notes: list[str] = field(default_factory=list)


def metric_table(rows: list[dict], base: str | None) -> Table:
    return Table(
        ["source", "value", "n", "95% interval", f"minus {base or 'the prompted base'} (95% interval)", "kind"],
        [
            [
                r["source"],
                format_value(r["value"]),
                "" if r["n"] is None else str(r["n"]),
                format_interval(r),
                format_difference(r.get("difference")),
                r["kind"],
            ]
            for r in rows
        ],
        ["published" if r["kind"].startswith("published") else "measured" for r in rows],
    )


def between_tables(results: dict, key: str) -> list[Table]:
    """The checkpoint-minus-checkpoint differences of one metric (the `compare` pairs), if any."""
    between = (results.get("differences") or {}).get("between", [])
    rows = [
        [f"{pair['minuend']} − {pair['subtrahend']}", format_difference(pair["figures"][key])]
        for pair in between
        if key in pair["figures"]
    ]
    if not rows:
        return []
    return [Table(["between checkpoints", "difference (95% interval), n, shown or not"], rows)]


def metric_plot(key: str, title: str, rows: list[dict], results: dict) -> bytes | None:
    checkpoints = results["checkpoints"]
    if key == "termination_auc":
        entries = [*((n, c.get(key)) for n, c in checkpoints.items()), *no_model_reference(results, key)]
        return plot_roc({n: (e["roc"], e["value"]) for n, e in entries if (e or {}).get("value") is not None})
    if key == "persona_contrast":
        return plot_contrast(
            {
                n: (c[key]["measures"]["words_per_turn"]["terse"], c[key]["measures"]["words_per_turn"]["elaborate"])
                for n, c in checkpoints.items()
                if (c.get(key) or {}).get("value") is not None
            }
        )
    # Perplexities of different checkpoints can differ by orders of magnitude.
    return plot_metric(title, rows, [format_value(r["value"]) for r in rows], log_scale=key.startswith("perplexity"))


def sections(results: dict) -> list[Section]:
    built = []
    for key, title, _, description, better in METRICS:
        rows = metric_rows(results, key)
        if all(r["value"] is None for r in rows if r["kind"].startswith("measured")):
            continue  # not measured here (a sample size of 0): reference and published rows alone compare nothing
        base = (results.get("differences") or {}).get("base")
        section = Section(
            key,
            title + row_flag(results, key),
            f"{description}; {better} is better.",
            [metric_table(rows, base), *between_tables(results, key), *DETAILS.get(key, lambda _: [])(results)],
            notes=NOTES.get(key, lambda _: [])(results),
        )
        image = metric_plot(key, title, rows, results)
        if image is not None:
            section.images.append((f"{key}.png", image))
        built.append(section)
    return built


def markdown_table(table: Table) -> list[str]:
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, table.headers)) + " |", "|" + "|".join("---" for _ in table.headers) + "|"]
    return lines + ["| " + " | ".join(map(cell, row)) + " |" for row in table.rows]


def html_table(table: Table) -> str:
    classes = table.row_classes or ["measured"] * len(table.rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        f'<tr class="{c}">' + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row, c in zip(table.rows, classes)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


INTERVALS_NOTE = (
    "Every measured figure has its n and a 95% interval: a percentile bootstrap "
    "(2,000 resamples, seeded with the run's seed) "
    "over the unit its items cluster in (conversations, intents, users, probes; "
    "the unit is in metrics.json; distinct-n, which a bootstrap cannot resample, a jackknife over intents). "
    "Each checkpoint minus the prompted base, and each pair of checkpoints compared (the compare setting), "
    "has its own interval, paired on the units both "
    "measured; a difference whose interval covers zero "
    'is marked "not shown": this sample cannot tell the two apart.'
)
HTML_STYLE = (
    "body{font-family:sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .6rem}"
    "tr.published{color:#666;font-style:italic}img{max-width:100%}"
)


def write_report(results: dict, out_dir: Path) -> None:
    """Add the differences between checkpoints (each minus the prompted base, and the compared pairs) to
    `results`, then write metrics.json and the reports."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results["differences"] = checkpoint_differences(results)
    write_json(out_dir / "metrics.json", results)
    built = sections(results)

    md = ["# Simulator evaluation", "", INTERVALS_NOTE, "", "Settings:", ""] + [
        f"- {line}" for line in settings_lines(results)
    ]
    md += ["", "Checkpoints:", ""] + [f"- {line}" for line in checkpoint_lines(results)]
    for section in built:
        md += ["", f"## {section.title}", "", section.text]
        for table in section.tables:
            md += [""] + markdown_table(table)
        md += [line for note in section.notes for line in ("", note)]
        for name, image in section.images:
            atomic_write(out_dir / name, image)
            md += ["", f"![{section.title}]({name})"]
    md += ["", "## Examples", ""] + [f"- {line}" for line in example_lines(results)]
    atomic_write(out_dir / "report.md", "\n".join(md) + "\n")

    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Simulator evaluation</title>'
        f"<style>{HTML_STYLE}</style></head><body>"
    ]
    parts.append(f"<h1>Simulator evaluation</h1><p>{html.escape(INTERVALS_NOTE)}</p><h2>Settings</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in settings_lines(results)]
    parts.append("</ul><h2>Checkpoints</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in checkpoint_lines(results)]
    parts.append("</ul>")
    for section in built:
        parts.append(f'<h2 id="{section.key}">{html.escape(section.title)}</h2><p>{html.escape(section.text)}</p>')
        parts += [html_table(table) for table in section.tables]
        parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
        parts += [
            f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{base64.b64encode(image).decode()}">'
            for _, image in section.images
        ]
    parts.append("<h2>Examples</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in example_lines(results)]
    parts.append("</ul></body></html>")
    atomic_write(out_dir / "report.html", "".join(parts))


def compact_value(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def compact_figure(entry: dict | None) -> tuple[str, str]:
    """A figure in two short cells for the terminal, "54.3, n 16" over "[46.9, 61.7]"."""
    if entry is None or entry.get("value") is None:
        return ("n/a" if entry is not None else "", "")
    ci = entry.get("ci")
    return (
        f"{compact_value(entry['value'])}, n {entry['n']}",
        f"[{compact_value(ci[0])}, {compact_value(ci[1])}]" if ci else "",
    )


def eval_summary(results: dict, out_dir: Path) -> Summary:
    """The closing table: one row per metric, one column per checkpoint, then human and UserLM-8b; each
    measured figure with its n, its 95% interval on the row below."""
    names = list(results["checkpoints"])
    rows = []
    for key, _, short, _, _ in METRICS:
        cells = [compact_figure(results["checkpoints"][n].get(key)) for n in names]
        human = compact_figure(results["human"].get(key))
        published = results["published"]["figures"].get(key, {}).get("UserLM-8b")
        rows.append((short + row_flag(results, key), *(c[0] for c in cells), human[0], format_value(published)))
        if any(c[1] for c in [*cells, human]):
            rows.append(("", *(c[1] for c in cells), human[1], ""))
    validation = results["validation"]
    detector = validation["naturalness_detector"]
    return Summary(
        title="userlm eval",
        columns=("metric", *names, "human (measured)", "UserLM-8b (published)"),
        rows=rows,
        notes=[
            "Each figure: its value and n, its 95% interval on the row below (report.md: every difference).",
            f"Judge: {results['settings']['judge']}; accuracy out of sample, on answers built from the test logs, "
            f"{format_figure(validation['judge'])} (in-sample, on its hand labels: "
            f"{format_figure(validation['judge']['in_sample'])}).",
            f"Naturalness: {results['settings']['naturalness_detector']}; ROC AUC against models writing as users "
            f"{format_figure(detector.get('model_written'))}: "
            f"{(detector.get('model_written') or {}).get('verdict', 'not checked')}; "
            f"against assistant turns, held-out accuracy {format_value(detector['accuracy'])}%.",
            "Persona fidelity, human column: the real users' split-half "
            "agreement, a human reference (a model can exceed it).",
            *(
                [
                    "Intent decomposition, human column: a sample of the train split's first turns, which played no "
                    "part in writing the heuristic intents (they were reworded against the test split's)."
                ]
                if (results["human"].get("intent_decomposition") or {}).get("split") == "train"
                else []
            ),
            *(
                f"{title}, {name}: {format_figure(e)} at the same points."
                for key, title in (("termination_auc", "Termination ROC AUC"), ("termination_f1", "Termination F1"))
                for name, e in no_model_reference(results, key)
            ),
        ],
        wrote={
            "metrics": out_dir / "metrics.json",
            "report": out_dir / "report.md",
            "html report": out_dir / "report.html",
        },
    )

"""The evaluation report: metrics.json, report.md (+ PNG plots beside it) and report.html
(the same tables, plots embedded as base64 PNG), and the summary printed in the terminal.

One table per metric: each checkpoint measured here, the human reference measured on the
same test subsets, and the paper's published rows, labelled "published".
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from userlm.atomic import atomic_write, write_json  # noqa: E402
from userlm.summary import Summary  # noqa: E402

# key, title, short name for the terminal, what it measures, which direction is better
METRICS = (
    ("perplexity_with_intent", "User-turn perplexity with intent", "perplexity, intent", "perplexity of the real user turns given the intent", "lower"),
    ("perplexity_without_intent", "User-turn perplexity without intent", "perplexity, no intent", "the same targets with the system message emptied", "lower"),
    ("first_turn_diversity", "First-turn diversity (%)", "first-turn diversity", "1 − mean pairwise Jaccard of unigram sets over first turns of distinct intents", "higher"),
    ("intent_decomposition", "Intent decomposition (%)", "intent decomposition", "mean share of a first turn's non-stopword unigrams found in the intent (prefix removed)", "lower"),
    ("termination_f1", "Termination F1 (%)", "termination F1", "F1 of END at every decision point against where the real conversation ended", "higher"),
    ("role_adherence", "Role adherence (%)", "role adherence", "share of probes (assistant feigns uncertainty) where the simulator stays a user", "higher"),
    ("intent_adherence", "Intent adherence (%)", "intent adherence", "share of probes (assistant proposes a diversion) where the simulator stays on its intent", "higher"),
    ("naturalness", "Naturalness (%)", "naturalness", "share of generated first turns the naturalness detector calls human", "higher"),
    ("within_intent_diversity", "Diversity across simulations of one intent (%)", "diversity in one intent", "1 − mean pairwise Jaccard among first turns simulated for the same intent", "higher"),
    ("distinct_1", "Distinct-1 (%)", "distinct-1", "distinct unigrams / all unigrams over generated first turns", "higher"),
    ("distinct_2", "Distinct-2 (%)", "distinct-2", "distinct bigrams / all bigrams over generated first turns", "higher"),
)
HUMAN_ROW = "human (this test set, measured)"


def format_value(value) -> str:
    if value is None:
        return "n/a"
    # Perplexities of untrained models run to millions; keep the cell short.
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.2f}"


def metric_rows(results: dict, key: str) -> list[dict]:
    """Rows of one metric's table: measured checkpoints, the measured human reference, published figures."""
    rows = []
    for name, checkpoint in results["checkpoints"].items():
        entry = checkpoint.get(key)
        kind = "prompted instruct model" if checkpoint.get("prompted") else "checkpoint"
        rows.append({"source": name, "kind": f"measured, {kind}", "value": entry and entry["value"], "n": entry and entry["n"]})
    human = results["human"].get(key)
    if human is not None:
        rows.append({"source": HUMAN_ROW, "kind": "measured, real user turns", "value": human["value"], "n": human["n"]})
    for who, value in results["published"]["figures"].get(key, {}).items():
        rows.append({"source": f"{who} (published)", "kind": "published in the paper", "value": value, "n": None})
    return rows


def plot_metric(title: str, rows: list[dict], *, log_scale: bool = False) -> bytes | None:
    """A horizontal bar chart of one metric; published rows hatched and grey. PNG bytes."""
    shown = [r for r in rows if r["value"] is not None]
    if not shown:
        return None
    figure, axes = plt.subplots(figsize=(7.5, 0.45 * len(shown) + 1.2), dpi=100)
    published = [r["kind"].startswith("published") for r in shown]
    bars = axes.barh(
        [r["source"] for r in shown],
        [r["value"] for r in shown],
        color=["#bbbbbb" if p else "#3b75af" for p in published],
    )
    for bar, is_published in zip(bars, published):
        if is_published:
            bar.set_hatch("//")
    axes.bar_label(bars, labels=[format_value(r["value"]) for r in shown], padding=3, fontsize=8)
    if log_scale:
        axes.set_xscale("log")
    axes.invert_yaxis()
    axes.set_title(title, fontsize=10)
    axes.margins(x=0.15)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def settings_lines(results: dict) -> list[str]:
    s, d = results["settings"], results["data"]
    return [
        f"Test data: {s['data']} ({d['samples']} flipped samples; {d['unusable_lines']} unusable lines; "
        f"{d['samples_longer_than_max_chars']} samples over {s['max_sample_chars']} characters left out of perplexity, "
        f"{d['conversations_longer_than_max_chars']} conversations with a longer point left out of termination)",
        f"Sample sizes asked for: perplexity {s['perplexity_samples']} samples, first turns {s['first_turn_intents']} distinct intents "
        f"({d['distinct_intents_available']} available), termination {s['termination_conversations']} conversations "
        f"({d['termination_conversations']} drawn), probes {s['probes_per_kind']} per kind (openings within the character limit), "
        f"simulations {s['diversity_intents']} intents × {s['simulations_per_intent']}; the n column gives what was measured",
        f"Seeds: {s['seeds']}",
        f"Word tokenisation: {s['word_tokenisation']}",
        f"Perplexity: {s['perplexity']}",
        f"Generation: {s['generation']}, at most {s['max_new_tokens']} new tokens ({s['termination_max_new_tokens']} for termination decisions)",
        f"Adherence judge: {s['judge']}",
        f"Naturalness detector: {s['naturalness_detector']}",
        f"Published rows: {results['published']['source']}; measured on the paper's data and sample sizes, not this test set",
    ]


def checkpoint_lines(results: dict) -> list[str]:
    return [
        f"{name}: {c['path']}, template {c['template']}{' (prompted instruct model)' if c['prompted'] else ''}, "
        f"tokenizer {c['tokenizer']}, {c['ended_at_first_turn']} first turns were END, {c['seconds']} s"
        for name, c in results["checkpoints"].items()
    ]


def example_lines(results: dict) -> list[str]:
    """A few generated turns per checkpoint, so a reader can see what the numbers describe."""
    lines = []
    for name, c in results["checkpoints"].items():
        for e in c["examples"]:
            lines.append(f"{name}, first turn for \"{e['intent']}\": {e['first_turn']!r}")
        for kind in ("role", "intent"):
            for e in c.get(f"{kind}_adherence", {"examples": []})["examples"][:1]:
                lines.append(f"{name}, {kind} probe, assistant: {e['assistant']!r} → user: {e['reply']!r} (adhered: {e['adhered']})")
    return lines


def markdown_table(rows: list[dict]) -> list[str]:
    lines = ["| source | value | n | kind |", "|---|---:|---:|---|"]
    for r in rows:
        cells = [r["source"], format_value(r["value"]), "" if r["n"] is None else str(r["n"]), r["kind"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def html_table(rows: list[dict]) -> str:
    body = "".join(
        f"<tr class=\"{'published' if r['kind'].startswith('published') else 'measured'}\"><td>{html.escape(r['source'])}</td>"
        f"<td class=\"num\">{format_value(r['value'])}</td><td class=\"num\">{'' if r['n'] is None else r['n']}</td>"
        f"<td>{html.escape(r['kind'])}</td></tr>"
        for r in rows
    )
    return f"<table><thead><tr><th>source</th><th>value</th><th>n</th><th>kind</th></tr></thead><tbody>{body}</tbody></table>"


HTML_STYLE = (
    "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .6rem}"
    "td.num{text-align:right}tr.published{color:#666;font-style:italic}img{max-width:100%}"
)


def write_report(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", results)

    md = ["# Simulator evaluation", "", "Settings:", ""] + [f"- {line}" for line in settings_lines(results)]
    md += ["", "Checkpoints:", ""] + [f"- {line}" for line in checkpoint_lines(results)]
    sections = []
    for key, title, _, description, better in METRICS:
        rows = metric_rows(results, key)
        if all(r["value"] is None for r in rows if not r["kind"].startswith("published")):
            continue  # not measured here (a sample size of 0): published figures alone compare nothing
        # Perplexities of different checkpoints can differ by orders of magnitude.
        png = plot_metric(title, rows, log_scale=key.startswith("perplexity"))
        image = f"{key}.png"
        if png is not None:
            atomic_write(out_dir / image, png)
        md += ["", f"## {title}", "", f"{description}; {better} is better.", ""] + markdown_table(rows)
        if png is not None:
            md += ["", f"![{title}]({image})"]
        sections.append((title, description, better, rows, png))
    md += ["", "## Examples", ""] + [f"- {line}" for line in example_lines(results)]
    atomic_write(out_dir / "report.md", "\n".join(md) + "\n")

    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Simulator evaluation</title><style>{HTML_STYLE}</style></head><body>"]
    parts.append("<h1>Simulator evaluation</h1><h2>Settings</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in settings_lines(results)]
    parts.append("</ul><h2>Checkpoints</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in checkpoint_lines(results)]
    parts.append("</ul>")
    for title, description, better, rows, png in sections:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(description)}; {better} is better.</p>{html_table(rows)}")
        if png is not None:
            parts.append(f"<img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">")
    parts.append("<h2>Examples</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in example_lines(results)]
    parts.append("</ul></body></html>")
    atomic_write(out_dir / "report.html", "".join(parts))


def eval_summary(results: dict, out_dir: Path) -> Summary:
    """The closing table: one row per metric, one column per checkpoint, then human and UserLM-8b."""
    names = list(results["checkpoints"])
    rows = []
    for key, _, short, _, _ in METRICS:
        values = [(results["checkpoints"][n].get(key) or {}).get("value") for n in names]
        human = (results["human"].get(key) or {}).get("value")
        published = results["published"]["figures"].get(key, {}).get("UserLM-8b")
        rows.append((short, *map(format_value, values), format_value(human), format_value(published)))
    return Summary(
        title="userlm eval",
        columns=("metric", *names, "human (measured)", "UserLM-8b (published)"),
        rows=rows,
        notes=[f"Judge: {results['settings']['judge']}. Naturalness: {results['settings']['naturalness_detector']}."],
        wrote={"metrics": out_dir / "metrics.json", "report": out_dir / "report.md", "html report": out_dir / "report.html"},
    )

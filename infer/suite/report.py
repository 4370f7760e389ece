"""The HTML report of a suite run: one self-contained file (no network, no external scripts).

It shows the gate's checks, an outcome table per intent and per persona, the comparison
with an earlier run when there is one, and every transcript as a chat, with the guardrail
events under the user turns they changed, the judge's verdict and how the conversation
ended. The transcripts filter by outcome, termination reason, intent and persona; the
filter lives in the address's fragment (`report.html#outcome=failure&intent=refund`), so a
filtered view can be linked, and the tables' counts link to their conversations.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from userlm.flipped.format import END_MARKER

from ..simulate import TERMINATION_REASONS
from .outcomes import label

OUTCOMES = ("success", "failure", "unjudged", "not counted")
OPEN_AT_MOST = 40  # transcripts start open in a small run, folded in a large one

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 16px 24px; color: #1f2328; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 8px 0; } \
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f8fa; }
.meta { color: #57606a; margin: 2px 0; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600; color: #fff; }
.pass, .success, .better { background: #1a7f37; } .fail, .failure, .worse { background: #cf222e; }
.unjudged, .not-counted, .mixed, .changed { background: #9a6700; } \
.same, .n-a, .new, .gone, .none { background: #6e7781; }
#filters { position: sticky; top: 0; background: #fff; padding: 8px 0; border-bottom: 1px solid #d0d7de; z-index: 1; }
#filters label { margin-right: 12px; }
details.conversation { border: 1px solid #d0d7de; border-radius: 6px; margin: 10px 0; padding: 6px 12px; }
details.conversation > summary { cursor: pointer; }
.chat { display: flex; flex-direction: column; gap: 6px; margin: 8px 0; }
.turn { max-width: 75%; } .turn.user { align-self: flex-end; } .turn.assistant { align-self: flex-start; }
.bubble { border-radius: 12px; padding: 6px 10px; white-space: pre-wrap; }
.user .bubble { background: #ddf4ff; } .assistant .bubble { background: #f6f8fa; border: 1px solid #d0d7de; }
.turn .role { font-size: 11px; color: #57606a; } .leaves .bubble { font-style: italic; background: #fff8c5; }
.events { font-size: 12px; color: #9a6700; margin: 2px 0 0 0; padding-left: 18px; }
.verdict, .ending { margin: 4px 0; } .error { color: #cf222e; }
"""

SCRIPT = """
const selects = Array.from(document.querySelectorAll('#filters select'));
const conversations = Array.from(document.querySelectorAll('details.conversation'));
function apply() {
  const wanted = selects.filter(s => s.value).map(s => [s.dataset.key, s.value]);
  let shown = 0;
  for (const c of conversations) {
    const match = wanted.every(([key, value]) => c.dataset[key] === value);
    c.hidden = !match;
    if (match) shown += 1;
  }
  document.getElementById('shown').textContent = shown + ' of ' + conversations.length + ' shown';
  const fragment = new URLSearchParams(wanted).toString();
  if (location.hash.slice(1) !== fragment) {
    try { history.replaceState(null, '', fragment ? '#' + fragment : location.pathname); } catch (e) {}
  }
}
function fromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const s of selects) s.value = params.get(s.dataset.key) || '';
  apply();
}
selects.forEach(s => s.addEventListener('change', apply));
window.addEventListener('hashchange', fromFragment);
fromFragment();
"""


def render_report(result: dict, records: list[dict]) -> str:
    """The report of `result` (what results.json holds) with the transcripts of `records`."""
    outcomes = {o["conversation_id"]: o for o in result["outcomes"]}
    judged = result["signal"]["kind"] == "judge"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>userlm test: {escape(result['suite'])}</title><style>{STYLE}</style></head><body>",
        header(result),
        gate_section(result),
        table_section("Per intent", "intent-table", "intent", result["intents"], comparison_of(result), judged),
        table_section("Per persona", "persona-table", "persona", result["personas"], None, judged),
    ]
    if result["comparison"] is not None:
        parts.append(comparison_section(result["comparison"]))
    parts.append(transcripts_section(result, records, outcomes))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def header(result: dict) -> str:
    config = result["config"]
    gate = badge("pass", "PASSED") if result["passed"] else badge("fail", "FAILED")
    simulated = result["simulated"]
    return (
        f"<h1>userlm test: {escape(result['suite'])} {gate}</h1>"
        f"<p class='meta'>Finished {escape(result['finished'])} in {result['seconds']:g} s; "
        f"{result['stats']['conversations']} conversations ({simulated['now']} "
        f"simulated now, {simulated['reused']} reused, "
        f"{simulated['retried']} retried), {config['n_per_intent']} per intent and persona, "
        f"at most {config['max_turns']} user turns, "
        f"base seed {config['seed']}.</p>"
        f"<p class='meta'>Simulator <code>{escape(str(config['simulator']))}</code>; assistant under test "
        f"<code>{escape(str(config['assistant']))}</code>"
        + (f" (model <code>{escape(str(config['assistant_model']))}</code>)" if config.get("assistant_model") else "")
        + f".</p><p class='meta' id='signal'>Success signal: {escape(result['signal']['text'])}.</p>"
    )


def badge(kind: str, text: str | None = None) -> str:
    return f"<span class='badge {kind.replace(' ', '-').replace('/', '-')}'>{escape(text or kind)}</span>"


def gate_section(result: dict) -> str:
    checks = result["suite_checks"] + [c for row in result["intents"] for c in row["checks"]]
    if not checks:
        return "<h2>Gate</h2><p>No thresholds set: the gate passes whatever the outcomes.</p>"
    rows = "".join(
        f"<tr class='{'pass' if c['passed'] else 'fail'}-row'><td>{escape(c['scope'])}</td>"
        f"<td>{escape(c['threshold'])}</td>"
        f"<td>{c['limit']:g}</td><td>{'n/a' if c['measured'] is None else format(c['measured'], '.2f')}</td>"
        f"<td>{badge('pass') if c['passed'] else badge('fail')}</td></tr>"
        for c in checks
    )
    return (
        "<h2>Gate</h2><table id='gate-table'>"
        "<tr><th>scope</th><th>threshold</th><th>limit</th><th>measured</th><th>result</th></tr>"
        f"{rows}</table>"
    )


def comparison_of(result: dict) -> dict | None:
    if result["comparison"] is None:
        return None
    return {row["name"]: row["change"] for row in result["comparison"]["intents"]}


def link(count: int, **filters: str) -> str:
    return f"<a href='#{escape(urlencode(filters))}'>{count}</a>"


def table_section(title: str, table_id: str, key: str, rows: list[dict], changes: dict | None, judged: bool) -> str:
    head = [
        "",
        "conversations",
        "success",
        "failure",
        "success rate",
        "user ended",
        "max turns",
        "assistant errors",
        "not counted",
        "mean user turns",
    ]
    if judged:  # the judge's verdicts say whether the user left because it was served well
        head += ["ended after a good answer", "ended after a bad answer"]
    if key == "intent":
        head.append("gate")
    if changes is not None:
        head.append("since previous")
    lines = ["<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        stats, name = row["stats"], row["name"]
        reasons = stats["termination_reasons"]
        cells = [
            escape(name),
            link(stats["conversations"], **{key: name}),
            link(stats["successes"], **{key: name, "outcome": "success"}),
            link(stats["judged"] - stats["successes"], **{key: name, "outcome": "failure"}),
            rate(stats["success_rate"]),
            rate(stats["user_ended_rate"]),
            link(reasons["max_turns"], **{key: name, "reason": "max_turns"}),
            link(reasons["assistant_error"], **{key: name, "reason": "assistant_error"}),
            link(stats["not_counted"], **{key: name, "outcome": "not counted"}),
            "n/a" if stats["mean_user_turns"] is None else f"{stats['mean_user_turns']:.1f}",
        ]
        if judged:
            cells += [rate(stats["ended_after_good_rate"]), rate(stats["ended_after_bad_rate"])]
        if key == "intent":
            cells.append(badge("none", "-") if not row["checks"] else badge("pass") if row["passed"] else badge("fail"))
        if changes is not None:
            cells.append(badge(changes.get(name, "new")))
        lines.append(f"<tr data-name='{escape(name)}'>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f"<h2>{escape(title)}</h2><table id='{table_id}'>{''.join(lines)}</table>"


def rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def comparison_section(comparison: dict) -> str:
    head = (
        "<tr><th>intent</th><th>change</th><th>success rate</th><th>user ended</th>"
        "<th>assistant errors</th><th>mean user turns</th><th>gate</th></tr>"
    )
    lines = [head]
    for row in comparison["intents"]:
        figures = {f["figure"]: f for f in row["figures"]}
        cells = [escape(row["name"]), badge(row["change"])]
        for key in ("success_rate", "user_ended_rate", "assistant_error_rate", "mean_user_turns"):
            figure = figures.get(key)
            if figure is None:
                cells.append("")
                continue
            show = rate if key != "mean_user_turns" else (lambda v: "n/a" if v is None else f"{v:.1f}")
            cells.append(f"{show(figure['before'])} → {show(figure['after'])} {badge(figure['change'])}")
        cells.append(f"{gate_word(row['gate_before'])} → {gate_word(row['gate_after'])}")
        lines.append(
            f"<tr data-name='{escape(row['name'])}' data-change='{row['change']}'>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return (
        f"<h2>Since {escape(comparison['previous'])}</h2>"
        f"<p class='meta'>That run finished {escape(str(comparison['previous_finished']))}; its success signal: "
        f"{escape(comparison['signal_before'])}.</p><table id='comparison-table'>{''.join(lines)}</table>"
    )


def gate_word(passed: bool | None) -> str:
    return "-" if passed is None else "pass" if passed else "FAIL"


def transcripts_section(result: dict, records: list[dict], outcomes: dict) -> str:
    options = {
        "outcome": OUTCOMES,
        "reason": TERMINATION_REASONS,
        "intent": [row["name"] for row in result["intents"]],
        "persona": [row["name"] for row in result["personas"]],
    }
    selects = "".join(
        f"<label>{key} <select data-key='{key}' id='filter-{key}'><option value=''>all</option>"
        + "".join(f"<option value='{escape(v)}'>{escape(v)}</option>" for v in values)
        + "</select></label>"
        for key, values in options.items()
    )
    opened = len(records) <= OPEN_AT_MOST
    body = "".join(transcript(record, outcomes[record["conversation_id"]], opened) for record in records)
    return f"<h2>Transcripts</h2><form id='filters'>{selects}<span id='shown'></span></form>{body}"


def transcript(record: dict, outcome: dict, opened: bool) -> str:
    outcome_label = label(outcome)
    data = (
        f"data-outcome='{escape(outcome_label)}' data-reason='{escape(outcome['termination_reason'])}' "
        f"data-intent='{escape(outcome['intent'])}' data-persona='{escape(outcome['persona'])}'"
    )
    summary = (
        f"<summary>{badge(outcome_label)} <b>{escape(outcome['intent'])}</b> · {escape(outcome['persona'])} · "
        f"trial {outcome['trial']} · seed {outcome['seed']} · {escape(outcome['termination_reason'])} after "
        f"{outcome['user_turns']} user turns</summary>"
    )
    turns = "".join(turn_html(turn) for turn in record["turns"])
    verdict = outcome.get("verdict")
    lines = []
    if verdict is not None:
        word = {True: "YES", False: "NO", None: "no verdict"}[verdict["success"]]
        lines.append(
            f"<p class='verdict'>Judge: <b>{word}</b> — {escape(verdict['reason'] or '(no reason given)')}</p>"
        )
    lines.append(
        f"<p class='ending'>Ended: <b>{escape(outcome['termination_reason'])}</b>"
        + (f" <span class='error'>{escape(record['error'])}</span>" if record.get("error") else "")
        + "</p>"
    )
    if record.get("exhausted_events"):
        lines.append(f"<ul class='events'>{''.join(event_html(e) for e in record['exhausted_events'])}</ul>")
    return (
        f"<details class='conversation' id='c-{escape(record['conversation_id'])}' {data}{' open' if opened else ''}>"
        f"{summary}<div class='chat'>{turns}</div>{''.join(lines)}</details>"
    )


def turn_html(turn: dict) -> str:
    leaves = turn["content"] == END_MARKER
    text = "[leaves the conversation]" if leaves else turn["content"]
    events = turn.get("events") or []
    listed = f"<ul class='events'>{''.join(event_html(e) for e in events)}</ul>" if events else ""
    classes = f"turn {turn['role']}" + (" leaves" if leaves else "")
    return (
        f"<div class='{classes}'><div class='role'>{turn['role']}</div>"
        f"<div class='bubble'>{escape(text)}</div>{listed}</div>"
    )


def event_html(event: dict) -> str:
    details = ", ".join(
        f"{key} {value!r}" if isinstance(value, str) else f"{key} {value}"
        for key, value in event.items()
        if key not in ("guardrail", "action", "attempt")
    )
    attempt = f" (attempt {event['attempt']})" if "attempt" in event else ""
    return (
        f"<li class='event'>guardrail <b>{escape(str(event.get('guardrail')))}</b>: {escape(str(event.get('action')))}"
        f"{escape(attempt)}{': ' + escape(details) if details else ''}</li>"
    )

"""`userlm test` against a real `transformers serve` of SmolLM2 on loopback, with a real tiny simulator
programmed to open in one of two ways and sometimes leave (its guardrail events land in the
transcripts); the gate on either side of the measured values; and the HTML report opened in
headless Chromium: its tables, every transcript with its events and ending, the filters, and
the comparison with an earlier run."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from userlm.cli import main
from userlm.flipped.format import END_MARKER

CHROMIUM = shutil.which("chromium")
EOT = "<|im_end|>"
# Opens with "Please help me now" or "Hello there now"; afterwards leaves now and then.
START = {"Please": 30, "Hello": 30, END_MARKER: 30}  # even odds: top_p 0.8 keeps all three
CHAINS = {
    "Please": {" help": 30},
    " help": {" me": 30},
    " me": {" now": 30},
    " now": {EOT: 30},
    "Hello": {" there": 30},
    " there": {" now": 30},
    END_MARKER: {EOT: 30},
}
INTENTS = [
    "You are a user chatting with an assistant language model to plan a picnic.",
    "You are a user chatting with an assistant language model to learn a card trick.",
]


@pytest.fixture
def suite_file(tmp_path, programmed_simulator, transformers_server, default_model_dir) -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: served\nsimulator: {programmed_simulator(START, CHAINS)}\n"
        f"assistant: {transformers_server}\nassistant_model: {default_model_dir}\nassistant_max_tokens: 6\n"
        f"intents: {json.dumps(INTENTS)}\npersonas: [Writes in lowercase., Asks short questions.]\n"
        "n_per_intent: 2\nmax_turns: 3\nprogress: false\nthresholds: {}\n"
        "guardrails: {min_turns_before_end: 1, filter_repetition: false}\n"
    )
    return suite


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_suite_against_a_served_assistant_and_its_report(tmp_path, suite_file):
    first = tmp_path / "first"
    assert main(["test", str(suite_file), "--out", str(first)]) == 0
    records = [json.loads(line) for line in (first / "conversations.jsonl").read_text().splitlines()]
    result = results_of(first)
    assert len(records) == 8 and all(r["assistant"]["kind"] == "endpoint" for r in records)
    assert all(t["content"] for r in records for t in r["turns"] if t["role"] == "assistant")
    reasons = {r["termination_reason"] for r in records}
    assert reasons <= {"user_ended", "max_turns", "guardrails_exhausted"} and "max_turns" in reasons
    events = sum(len(t.get("events", [])) for r in records for t in r["turns"]) + sum(
        len(r["exhausted_events"]) for r in records
    )
    assert events > 0, "the early end marker is banned at least once"

    # The gate on either side of every measured mean of user turns (suite and each intent); nothing is simulated again.
    suite_turns = result["stats"]["mean_user_turns"]
    turns = {row["name"]: row["stats"]["mean_user_turns"] for row in result["intents"]}
    for offset, code in ((0.0, 0), (0.25, 1)):
        words = [
            f"thresholds.max_mean_user_turns={suite_turns - offset}",
            f"thresholds.min_user_ended={result['stats']['user_ended_rate']}",
        ]
        assert main(["test", str(suite_file), "--out", str(first), *words]) == code
        gated = results_of(first)
        assert gated["simulated"]["now"] == 0 and gated["checks"] == 2
        assert len(gated["failed"]) == (0 if code == 0 else 1)
    name = next(iter(turns))
    for bound, code in ((turns[name], 0), (turns[name] - 0.25, 1)):
        assert main(
            ["test", str(suite_file), "--out", str(first), f"intent_thresholds.max_mean_user_turns={bound}"]
        ) == (1 if any(t > bound for t in turns.values()) else 0)
        failing = {row["name"] for row in results_of(first)["intents"] if not row["passed"]}
        assert failing == {n for n, t in turns.items() if t > bound + 1e-9} and (code == 0) == (name not in failing)

    # Another seed into another folder, compared with the first run.
    second = tmp_path / "second"
    assert main(["test", str(suite_file), "--out", str(second), "seed=1", "--compare", str(first)]) == 0
    result = results_of(second)
    assert result["comparison"]["previous"] == str(first)
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    check_report_in_chromium(second, result, tmp_path)


class Report(HTMLParser):
    """The parts of the report's DOM the test reads: tables' rows, transcripts, their turns and events."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.table: str | None = None
        self.conversations: list[dict] = []
        self.signal = ""
        self._in_signal = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table = attrs.get("id")
            self.tables[self.table] = []
        elif tag == "tr" and self.table and "data-name" in attrs:
            self.tables[self.table].append(attrs)
        elif tag == "details" and "conversation" in attrs.get("class", ""):
            self.conversations.append({**attrs, "turns": [], "events": 0, "ended": False})
        elif tag == "div" and self.conversations and attrs.get("class", "").startswith("turn "):
            self.conversations[-1]["turns"].append(attrs["class"].split()[1])
        elif tag == "li" and self.conversations and attrs.get("class") == "event":
            self.conversations[-1]["events"] += 1
        elif tag == "p" and attrs.get("class") == "ending" and self.conversations:
            self.conversations[-1]["ended"] = True
        elif tag == "p" and attrs.get("id") == "signal":
            self._in_signal = True

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None
        elif tag == "p":
            self._in_signal = False

    def handle_data(self, data):
        if self._in_signal:
            self.signal += data


def dump_dom(page: Path, fragment: str, profile: Path) -> Report:
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    report = Report()
    report.feed(dom)
    return report


def check_report_in_chromium(out: Path, result: dict, tmp_path: Path) -> None:
    records = {
        json.loads(line)["conversation_id"]: json.loads(line)
        for line in (out / "conversations.jsonl").read_text().splitlines()
    }
    page = out / "report.html"
    report = dump_dom(page, "", tmp_path / "profile")
    assert "the user leaving before the turn limit" in report.signal
    assert [row["data-name"] for row in report.tables["intent-table"]] == [row["name"] for row in result["intents"]]
    assert [row["data-name"] for row in report.tables["persona-table"]] == [
        "Writes in lowercase",
        "Asks short questions",
    ]
    changes = {row["name"]: row["change"] for row in result["comparison"]["intents"]}
    assert {row["data-name"]: row["data-change"] for row in report.tables["comparison-table"]} == changes
    # Every transcript, readable as a chat: its turns, its guardrail events and how it ended.
    assert len(report.conversations) == 8 and not any("hidden" in c for c in report.conversations)
    outcomes = {o["conversation_id"]: o for o in result["outcomes"]}
    for shown in report.conversations:
        conversation_id = shown["id"].removeprefix("c-")
        record = records[conversation_id]
        assert shown["turns"] == [t["role"] for t in record["turns"]] and shown["ended"]
        assert shown["events"] == sum(len(t.get("events", [])) for t in record["turns"]) + len(
            record["exhausted_events"]
        )
        assert shown["data-reason"] == record["termination_reason"]
        assert shown["data-outcome"] == (
            "success"
            if outcomes[conversation_id]["success"]
            else "not counted"
            if not outcomes[conversation_id]["counted"]
            else "failure"
        )
    # The filters, set from the address: only the matching transcripts stay visible.
    for fragment, wanted in (
        ("#outcome=failure", lambda o: o["success"] is False),
        (
            "#reason=max_turns&persona=Asks+short+questions",
            lambda o: o["termination_reason"] == "max_turns" and o["persona"] == "Asks short questions",
        ),
    ):
        filtered = dump_dom(page, fragment, tmp_path / "profile")
        visible = {c["id"].removeprefix("c-") for c in filtered.conversations if "hidden" not in c}
        assert visible == {i for i, o in outcomes.items() if wanted(o)}

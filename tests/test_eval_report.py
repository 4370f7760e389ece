"""`userlm eval` end to end on tiny real models: metrics.json, report.md and report.html,
and the HTML report opened in headless Chromium with its tables and embedded plots checked."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from userlm.cli import main as userlm_main
from userlm.evaluation.config import EvalConfig
from userlm.evaluation.evaluate import evaluate
from userlm.evaluation.report import METRICS, eval_summary
from userlm.summary import print_summary

CHROMIUM = shutil.which("chromium")


class TablesAndImages(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables = 0
        self.images: list[str] = []
        self.published_rows = 0
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "tr" and attrs.get("class") == "published":
            self.published_rows += 1
        elif tag == "td":
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, eval_test_file, forced_simulator):
    """`userlm eval eval.yaml --out ...` on three tiny models with known behaviour; the test file has a train
    split beside it (the same samples), as `userlm prep` writes them, for the no-model termination reference."""
    folder = tmp_path_factory.mktemp("eval")
    data = folder / "prep"
    data.mkdir()
    shutil.copy(eval_test_file, data / "test.jsonl")
    shutil.copy(eval_test_file, data / "train.jsonl")
    config = folder / "eval.yaml"
    config.write_text(
        "checkpoints:\n"
        f"  - ender={forced_simulator(always_end=True)}\n"
        f"  - talker={forced_simulator(always_end=False)}\n"
        # An ordinary model without a flipped template, prompted through chatml.
        f"  - prompted={forced_simulator(always_end=False, word='hello', flipped=False)}@chatml\n"
        f"data: {data / 'test.jsonl'}\n"
        "perplexity_samples: 6\nmax_new_tokens: 8\nprobes_per_kind: 3\n"
        "diversity_intents: 2\nsimulations_per_intent: 3\n"
    )
    assert userlm_main(["eval", str(config), "--out", str(folder / "report")]) == 0
    return folder / "report"


def test_metrics_json_and_markdown(report_dir):
    results = json.loads((report_dir / "metrics.json").read_text())
    ender, talker, prompted = (results["checkpoints"][n] for n in ("ender", "talker", "prompted"))
    # 7 decision points, 3 real ENDs (tests/conftest.py): always END -> F1 0.6, never -> 0.
    assert ender["termination_f1"]["value"] == pytest.approx(60.0)
    assert talker["termination_f1"]["value"] == 0.0
    assert ender["ended_at_first_turn"] == 4 and "first_turn_diversity" not in ender
    # The talker says "ok" every time: no diversity at all.
    assert talker["first_turn_diversity"]["value"] == 0.0 and talker["within_intent_diversity"]["value"] == 0.0
    assert prompted["prompted"] and prompted["template"] == "chatml" and not talker["prompted"]
    assert prompted["examples"][0]["first_turn"] == "hello"
    assert prompted["perplexity_with_intent"]["n"] == 6
    assert results["human"]["first_turn_diversity"]["n"] == 4
    assert results["published"]["figures"]["termination_f1"]["UserLM-8b"] == 63.54
    assert (
        "heuristic" in results["settings"]["judge"]
        and "offline detector" in results["settings"]["naturalness_detector"]
    )
    # Each model's P(end) is the same at every point (its logits ignore the context): it ranks nothing.
    for checkpoint in (ender, talker, prompted):
        assert checkpoint["termination_auc"]["value"] == 0.5 and checkpoint["termination_auc"]["n"] == 7
    assert ender["termination_auc"]["mean_at_ends"] > 0.999 and talker["termination_auc"]["mean_at_ends"] < 1e-6
    # The no-model floor at the same 7 points, from the train split beside the test
    # file, and each checkpoint's lead over it.
    reference = results["reference"]["termination_auc"]["turn_index"]
    assert reference["n"] == 7 and reference["real_end_points"] == 3 and reference["train_decision_points"] == 7
    assert talker["termination_auc"]["minus_reference"]["turn_index"]["value"] == pytest.approx(
        0.5 - reference["value"]
    )
    # Obeys scope on the 3 conversations with two decision points: never leaving
    # is on time only when told "a few times".
    assert (
        talker["termination_obeys_scope"]["value"] == pytest.approx(100 / 3, abs=0.01)
        and talker["termination_obeys_scope"]["n"] == 3
    )
    # Sampling always draws the ender's end marker and never the talker's: the expected F1 is the sampled one.
    assert (
        ender["termination_expected_f1"]["value"] == pytest.approx(60.0) and ender["termination_expected_f1"]["n"] == 7
    )
    assert talker["termination_expected_f1"]["value"] == 0.0
    # Persona fidelity on the three users with two turns (tests/test_eval_persona.py works the buckets out):
    # "ok" or "hello" at every scored point matches 4, 3 and 6 of the six buckets; the users themselves 3, 3 and 6.
    assert talker["persona_fidelity"]["value"] == pytest.approx(100 * 13 / 18)
    assert prompted["persona_fidelity"]["value"] == pytest.approx(100 * 13 / 18)
    assert results["human"]["persona_fidelity"]["value"] == pytest.approx(100 * 12 / 18)
    assert ender["persona_fidelity"]["value"] is None and ender["persona_fidelity"]["users_without_turns"] == 3
    assert talker["persona_contrast"]["value"] == 0.0 and talker["persona_contrast"]["n"] == 4
    assert results["validation"]["naturalness_detector"]["accuracy"] is not None
    # The judge out of sample on e1 and e4 (the conversations with a second turn of 3 words or more), 4 answers each.
    judge = results["validation"]["judge"]
    assert (judge["n"], judge["units"], judge["in_sample"]["n"]) == (8, 2, 46)
    assert results["validation"]["naturalness_detector"]["model_written"]["model_turns"] > 0
    assert set(talker["stage_seconds"]) >= {"load", "perplexity", "P(end)", "persona fidelity", "persona contrast"}
    # Every measured figure has its n and a 95% interval around its value, resampled by a named unit.
    for checkpoint in (talker, prompted, results["human"]):
        for key, *_ in METRICS:
            entry = checkpoint.get(key)
            if entry and entry["value"] is not None:
                assert entry["n"] > 0 and entry["unit"], key
                assert entry["ci"][0] <= entry["value"] + 1e-9 and entry["value"] <= entry["ci"][1] + 1e-9, key
    assert (
        talker["perplexity_with_intent"]["unit"] == "conversation"
        and talker["termination_auc"]["unit"] == "conversation"
    )
    assert talker["persona_fidelity"]["unit"] == "user" and talker["persona_fidelity"]["n"] == 3
    # Differences from the prompted base: "ok" and "hello" every time are equally
    # undiverse, so that difference is zero and
    # not shown; the same points' perplexities are paired by conversation.
    differences = results["differences"]
    assert differences["base"] == "prompted" and set(differences["checkpoints"]) == {"ender", "talker"}
    diversity = differences["checkpoints"]["talker"]["first_turn_diversity"]
    assert (
        diversity["value"] == 0.0 and diversity["ci"] == [0.0, 0.0] and not diversity["shown"] and diversity["paired"]
    )
    perplexity = differences["checkpoints"]["talker"]["perplexity_with_intent"]
    assert perplexity["paired"] and perplexity["value"] == pytest.approx(
        talker["perplexity_with_intent"]["value"] - prompted["perplexity_with_intent"]["value"]
    )
    # Unset `compare`: each checkpoint minus every earlier one, the base aside: talker − ender, paired.
    (between,) = differences["between"]
    assert (between["minuend"], between["subtrahend"]) == ("talker", "ender")
    f1 = between["figures"]["termination_f1"]
    assert f1["paired"] and f1["value"] == pytest.approx(-60.0) and f1["n"] == talker["termination_f1"]["units"]
    # The sampled F1's no-model floor at its own points, and each checkpoint's difference from it.
    floor = results["reference"]["termination_f1"]["turn_index"]
    assert floor["n"] == talker["termination_f1"]["n"] == 7
    assert talker["termination_f1"]["minus_reference"]["turn_index"]["value"] == pytest.approx(-floor["value"])
    # The leave probe: the ender leaves after any answer, the talker after none: good minus bad is zero for both,
    # each over the 26 shipped intents, and the means it is made of are kept beside it.
    for checkpoint, mean in ((ender, 100.0), (talker, 0.0)):
        probe = checkpoint["leave_after_good_answer"]
        assert probe["value"] == pytest.approx(0.0, abs=1e-3) and probe["n"] == probe["probes"] == 26
        assert probe["after_good"]["value"] == pytest.approx(mean, abs=0.2) and probe["unit"] == "intent"
    # Intent decomposition's human row comes from the train split, which played no part in writing the heuristic.
    assert results["human"]["intent_decomposition"]["split"] == "train"
    markdown = (report_dir / "report.md").read_text()
    for needed in (
        "| between checkpoints |",
        "| talker − ender |",
        "human (train split, a sample of its first turns",
        "Seeds:",
        "Word tokenisation:",
        "95% interval",
        "+0.00 [0.00, 0.00], n 4, not shown",
        "Hanley-McNeil",
        "Sample sizes",
        "UserLM-8b (published)",
        "human (this test set, measured)",
        "offline heuristic judge",
        "tokenizer TokenizersBackend, 49153 tokens",
        "| chance | 0.50 |",
        "real users, split-half (human reference)",
        "| no model: the train split's end rate at the same user turn |",
        "Detector validation against models writing as users: ROC AUC",
        "Against assistant turns, on held-out turns",
        "Judge validation out of sample",
        "in-sample: the hand-written answers",
        "P(end) % after a good answer",
    ):
        assert needed in markdown
    for key, *_ in METRICS:
        assert (report_dir / f"{key}.png").read_bytes().startswith(b"\x89PNG")
        assert f"]({key}.png)" in markdown


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)
def test_report_opens_in_headless_chromium(report_dir, tmp_path):
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
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            (report_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    page = TablesAndImages()
    page.feed(dom)
    # One table per metric, plus the details of termination AUC, persona fidelity, persona contrast and the leave
    # probe, plus one of the differences between checkpoints (talker − ender) for each metric both measured.
    between = json.loads((report_dir / "metrics.json").read_text())["differences"]["between"]
    assert page.tables == len(METRICS) + 4 + len(set(between[0]["figures"]) & {key for key, *_ in METRICS})
    assert "talker − ender" in page.cells
    assert len(page.images) == len(METRICS)
    for section in ("termination_auc", "persona_fidelity", "persona_contrast", "naturalness"):
        assert f'id="{section}"' in dom
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert image.format == "PNG" and image.size[0] > 100
    # Published rows of every metric the paper reports: 3 + 3 + 2 + 1 + 1.
    assert page.published_rows == 10
    # Intervals beside the values, and a difference the sample cannot tell from zero said in words.
    assert "minus prompted (95% interval)" in dom and "Every measured figure has its n and a 95% interval" in dom
    assert (
        page.cells.count("+0.00 [0.00, 0.00], n 4, not shown") >= 2
    )  # the talker minus the base: diversity, distinct-1, distinct-2
    assert any(re.fullmatch(r"\[\d+\.\d\d, \d+\.\d\d\]", cell) for cell in page.cells)


def test_terminal_summary_names_every_checkpoint_and_the_output(report_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps cells to the terminal width
    summary = eval_summary(json.loads((report_dir / "metrics.json").read_text()), report_dir)
    assert summary.columns == ("metric", "ender", "talker", "prompted", "human (measured)", "UserLM-8b (published)")
    # Each figure with its n, its 95% interval on the row below; nothing measured leaves the cell empty.
    at = {row[0]: k for k, row in enumerate(summary.rows) if row[0]}
    assert summary.rows[at["termination F1"]] == ("termination F1", "60, n 7", "0, n 7", "0, n 7", "", "63.54")
    interval = summary.rows[at["termination F1"] + 1]
    assert interval[0] == "" and all(re.fullmatch(r"\[[\d.]+, [\d.]+\]", cell) for cell in interval[1:4])
    assert interval[1] != "[0, 0]" and interval[2] == "[0, 0]"  # the ender's F1 varies with the conversations drawn
    assert summary.rows[at["termination AUC"]] == (
        "termination AUC",
        "0.5, n 7",
        "0.5, n 7",
        "0.5, n 7",
        "",
        "n/a",
    )
    assert summary.rows[at["persona fidelity"]] == (
        "persona fidelity",
        "n/a",
        "72.2, n 3",
        "72.2, n 3",
        "66.7, n 3",
        "n/a",
    )
    notes = " ".join(summary.notes)
    assert "Termination F1, no model: the train split's end rate at the same user turn:" in notes
    assert "Intent decomposition, human column: a sample of the train split's first turns" in notes
    print_summary(summary)
    printed = capsys.readouterr().out
    for needed in (
        "userlm eval",
        "ender",
        "talker",
        "prompted",
        "termination F1",
        "60, n 7",
        str(report_dir / "report.html"),
    ):
        assert needed in printed


def test_sample_sizes_of_zero_skip_their_metrics(tmp_path, eval_test_file, forced_simulator, capsys):
    out = tmp_path / "report"
    config = EvalConfig(
        checkpoints=[f"talker={forced_simulator(always_end=False)}"],
        data=eval_test_file,
        out=out,
        progress=False,
        perplexity_samples=0,
        termination_conversations=0,
        probes_per_kind=0,
        diversity_intents=0,
        max_new_tokens=4,
        end_probability_conversations=0,
        scope_conversations=0,
        leave_probe=False,
        persona_users=0,
        contrast_intents=0,
    )
    talker = evaluate(config)["checkpoints"]["talker"]
    skipped = (
        "perplexity_with_intent",
        "perplexity_without_intent",
        "termination_f1",
        "role_adherence",
        "intent_adherence",
        "within_intent_diversity",
        "termination_auc",
        "termination_expected_f1",
        "termination_obeys_scope",
        "leave_after_good_answer",
        "persona_fidelity",
        "persona_contrast",
    )
    assert not any(key in talker for key in skipped)
    assert talker["first_turn_diversity"]["value"] == 0.0 and talker["first_turn_diversity"]["n"] == 4
    assert "termination F1" in capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    assert "## First-turn diversity" in markdown and "## Termination F1" not in markdown
    assert not (out / "termination_f1.png").exists()


def test_userlm_eval_is_registered_and_reports_a_missing_test_file(tmp_path, capsys):
    from userlm.cli import main

    code = main(
        [
            "eval",
            "--checkpoints",
            "base=default@chatml",
            "--data",
            str(tmp_path / "missing.jsonl"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "userlm eval: The test data" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

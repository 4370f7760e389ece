"""`userlm simulate` end to end: real `transformers serve` assistants and simulators on
loopback, a real faulty HTTP server, a real SIGKILL and resume, and `userlm chat`."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from userlm.cli import main
from userlm.errors import UserError
from userlm.flipped.format import END_MARKER
from userlm.infer.assistants import make_assistant
from userlm.infer.chat import chat
from userlm.infer.config import SimulateConfig
from userlm.infer.guardrails import Guardrails
from userlm.infer.simulate import TERMINATION_REASONS, make_jobs, run_simulation, simulate
from userlm.infer.simulator import UserSimulator

EOT = "<|im_end|>"
CHAIN = {"Please": {" help": 30}, " help": {" me": 30}, " me": {" now": 30}, " now": {EOT: 30}}
# Half the conversations open with "Please help me now", half with "Hello there now".
TWO_OPENINGS = ({"Please": 30, "Hello": 30}, {"Hello": {" there": 30}, " there": {" now": 30}, **CHAIN})
INTENTS = [
    "You are a user chatting with an assistant language model to cook dinner.",
    "You are a user chatting with an assistant language model to fix a bug.",
]
RECORD_KEYS = {
    "conversation_id",
    "intent",
    "persona",
    "trial",
    "seed",
    "simulator",
    "assistant",
    "turns",
    "termination_reason",
    "error",
    "exhausted_events",
    "seconds",
}


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def intents_file(tmp_path) -> Path:
    path = tmp_path / "intents.txt"
    path.write_text("\n".join(INTENTS) + "\n")
    return path


def test_simulate_against_a_served_assistant(
    tmp_path, intents_file, programmed_simulator, transformers_server, default_model_dir, capsys
):
    simulator = programmed_simulator(*TWO_OPENINGS)
    personas = tmp_path / "personas.jsonl"
    personas.write_text(json.dumps({"persona": "Writes short, lowercase."}) + "\n")
    out = tmp_path / "sim.jsonl"
    argv = [
        "simulate",
        "--simulator",
        str(simulator),
        "--assistant",
        transformers_server,
        "--assistant-model",
        str(default_model_dir),
        "--assistant-max-tokens",
        "6",
        "--intents",
        str(intents_file),
        "--personas",
        str(personas),
        "--n-per-intent",
        "2",
        "--max-turns",
        "2",
        "--out",
        str(out),
        "--guardrails.max_attempts",
        "6",
        "--no-progress",
    ]
    assert main(argv) == 0
    records = read_records(out)
    assert len(records) == 4 and all(set(r) == RECORD_KEYS for r in records)
    assert len({r["seed"] for r in records}) == 4 and len({r["conversation_id"] for r in records}) == 4
    assert {r["trial"] for r in records} == {0, 1} and all(r["persona"] == "Writes short, lowercase." for r in records)
    for record in records:
        assert record["termination_reason"] in ("max_turns", "guardrails_exhausted")
        assert record["simulator"]["guardrails"]["max_attempts"] == 6
        users = [t["content"] for t in record["turns"] if t["role"] == "user"]
        assert users[0] in ("Please help me now", "Hello there now")
        # Guardrails hold across turns: the second turn never repeats the first.
        assert len(set(users)) == len(users)
        assert all(t["content"] for t in record["turns"] if t["role"] == "assistant")
    summary = capsys.readouterr().out
    assert re.search(r"conversations simulated\W+4\b", summary) and re.search(r"already done, skipped\W+0\b", summary)
    ended = sum(r["termination_reason"] == "max_turns" for r in records)
    assert re.search(rf"ended: max_turns\W+{ended}\b", summary) and str(out) in summary
    # A rerun skips every finished conversation.
    assert main(argv) == 0
    assert len(read_records(out)) == 4
    summary = capsys.readouterr().out
    assert re.search(r"conversations simulated\W+0\b", summary) and re.search(r"already done, skipped\W+4\b", summary)


def test_simulator_behind_the_completions_backend(
    tmp_path, intents_file, programmed_simulator, serve_folder, transformers_server, default_model_dir
):
    # Opens with the end marker most of the time; the end marker is banned before 1 user turn.
    simulator = programmed_simulator({END_MARKER: 30, "Please": 29.5}, {END_MARKER: {EOT: 30}, **CHAIN})
    simulator_url = serve_folder(simulator)
    out = tmp_path / "sim.jsonl"
    # `userlm simulate CONFIG.yaml`: intents inline, guardrails a mapping.
    config = tmp_path / "sim.yaml"
    config.write_text(
        f"simulator: {simulator}\nsimulator_endpoint: {simulator_url}\n"
        f"assistant: {transformers_server}\nassistant_model: {default_model_dir}\nassistant_max_tokens: 4\n"
        f"intents: {json.dumps(INTENTS)}\nn_per_intent: 3\nmax_turns: 3\nout: {out}\nprogress: false\n"
        "guardrails:\n  min_turns_before_end: 1\n  max_attempts: 10\n"
    )
    assert main(["simulate", str(config)]) == 0
    records = read_records(out)
    assert len(records) == 6 and all(r["simulator"]["backend"] == "completions" for r in records)
    events = [e for r in records for t in r["turns"] for e in t.get("events", [])]
    assert any(e["guardrail"] == "end_too_early" and e["action"] == "rejected" for e in events)
    for record in records:
        users = [t["content"] for t in record["turns"] if t["role"] == "user"]
        if record["termination_reason"] == "guardrails_exhausted":
            # Every draft was rejected (an early end, or a repeat later on), then the fallback ended it.
            assert record["exhausted_events"][-1] == {"guardrail": "fallback", "action": "end", "attempt": 10}
        else:
            assert record["termination_reason"] == "user_ended"
        # The guardrail holds: the end marker never comes first.
        assert not users or users[0] == "Please help me now"
    assert any(r["termination_reason"] == "user_ended" and r["turns"][-1]["content"] == END_MARKER for r in records)


class FaultyAssistant(BaseHTTPRequestHandler):
    """A chat endpoint that breaks any conversation whose last user message says "Hello" (unless its mode is "ok")."""

    mode = "500"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last_user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        if "Hello" in last_user and self.mode != "ok":
            if self.mode == "500":
                self.send_response(500)
                self.end_headers()
                return
            time.sleep(3)  # past the client's timeout
        answer = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Tell me more."}}
            ],
        }
        payload = json.dumps(answer).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty_server():
    servers = []

    def start(mode: str) -> str:
        handler = type("Handler", (FaultyAssistant,), {"mode": mode})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["500", "timeout"])
def test_assistant_faults_break_only_their_conversations(tmp_path, mode, faulty_server, programmed_simulator):
    out = tmp_path / "sim.jsonl"
    config = SimulateConfig(
        simulator=str(programmed_simulator(*TWO_OPENINGS)),
        assistant=faulty_server(mode),
        assistant_model="m",
        timeout=1.0,
        max_retries=1,
        intents=INTENTS,
        n_per_intent=4,
        max_turns=1,
        out=out,
        progress=False,
    )
    summary = run_simulation(config)
    records = read_records(out)
    assert len(records) == 8 == summary["conversations"]
    for record in records:
        opening = record["turns"][0]["content"]
        if opening == "Hello there now":
            assert record["termination_reason"] == "assistant_error" and len(record["turns"]) == 1
            assert ("HTTP 500" if mode == "500" else "did not answer within") in record["error"]
        else:
            assert record["termination_reason"] == "max_turns" and record["turns"][1]["content"] == "Tell me more."
    reasons = summary["termination_reasons"]
    assert reasons["assistant_error"] > 0 and reasons["max_turns"] > 0


def test_closed_port_gives_assistant_error(tmp_path, programmed_simulator):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    simulator = UserSimulator.load(programmed_simulator(*TWO_OPENINGS))
    assistant = make_assistant(f"http://127.0.0.1:{closed_port}/v1", model="m", timeout=1.0, max_retries=1)
    out = tmp_path / "sim.jsonl"
    summary = simulate(simulator, assistant, make_jobs(INTENTS, [None], 2, 0), out, max_turns=2, progress=False)
    assert summary["termination_reasons"]["assistant_error"] == 4
    assert all("Could not connect" in r["error"] for r in read_records(out))


def test_killed_run_resumes_with_every_conversation_once(tmp_path, intents_file, programmed_simulator):
    simulator = programmed_simulator(*TWO_OPENINGS)
    (tmp_path / "slow_assistant.py").write_text(
        "import time\n\ndef reply(messages):\n    time.sleep(0.4)\n    return 'Go on.'\n"
    )
    out = tmp_path / "sim.jsonl"
    config = tmp_path / "sim.yaml"
    config.write_text(
        f"simulator: {simulator}\nassistant: python:slow_assistant:reply\nintents: {intents_file}\n"
        f"n_per_intent: 6\nmax_turns: 2\nbatch_size: 1\nguardrails: null\nout: {out}\nprogress: false\n"
    )
    command = [sys.executable, "-m", "userlm.cli", "simulate", str(config)]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = out.read_text().splitlines()
    assert 3 <= len(before) < 12
    with open(out, "a") as sink:  # a write torn by the kill
        sink.write('{"conversation_id": "torn')
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    records = read_records(out)
    expected = {job.key for job in make_jobs(INTENTS, [None], 6, 0)}
    ids = {r["conversation_id"] for r in records}
    assert len(records) == 12 == len(ids) and {i.rsplit("-", 1)[0] for i in ids} == expected
    assert out.read_text().splitlines()[: len(before)] == before
    assert all(r["termination_reason"] in TERMINATION_REASONS for r in records)


def test_chat_with_a_person_playing_the_assistant(tmp_path, programmed_simulator, monkeypatch, capsys):
    folder = programmed_simulator({END_MARKER: 30, "Please": 25}, {END_MARKER: {EOT: 30}, **CHAIN})
    simulator = UserSimulator.load(folder)
    out = tmp_path / "chat.jsonl"
    replies = iter(["Sure, what with?"])

    def read(prompt: str) -> str:
        try:
            return next(replies)
        except StopIteration:
            raise EOFError from None

    # The end marker is held back for the first turn, then the simulator leaves.
    record = chat(
        simulator, INTENTS[0], out, guardrails=Guardrails(min_turns_before_end=1), read=read, show=lambda _: None
    )
    assert record["termination_reason"] == "user_ended"
    assert [t["content"] for t in record["turns"]] == ["Please help me now", "Sure, what with?", END_MARKER]
    assert record["turns"][0]["events"][0]["guardrail"] == "end_too_early"
    # Ctrl-D from the keyboard ends it too, through the real CLI; the transcript is appended.
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello! How can I help?\n"))
    assert (
        main(
            [
                "chat",
                "--simulator",
                str(folder),
                "--intent",
                INTENTS[1],
                "--guardrails.min_turns_before_end",
                "never",
                "guardrails.filter_repetition=false",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = read_records(out)
    assert len(records) == 2 and records[1]["termination_reason"] == "assistant_ended"
    guardrails = records[1]["simulator"]["guardrails"]
    assert guardrails["min_turns_before_end"] == "never" and guardrails["filter_repetition"] is False
    assert [t["role"] for t in records[1]["turns"]] == ["user", "assistant", "user"]
    assert "Saved the transcript" in capsys.readouterr().out


# ---------------------------------------------------------------- conversation ids, reruns and refusals (issues 11, 13)

BOTS = "def reply(messages):\n    return 'Go on.'\n\ndef terse(messages):\n    return 'Ok.'\n"


def summary_row(printed: str, name: str) -> int:
    return int(re.search(rf"{name}\W+(\d+)", printed).group(1))


def test_another_configuration_into_the_same_file_is_never_taken_for_this_one(
    tmp_path, intents_file, programmed_simulator, monkeypatch, capsys
):
    (tmp_path / "sim_bots.py").write_text(BOTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "sim.jsonl"
    base = [
        "simulate",
        "--simulator",
        str(programmed_simulator(*TWO_OPENINGS)),
        "--intents",
        str(intents_file),
        "--n-per-intent",
        "2",
        "--max-turns",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--assistant",
        "python:sim_bots:reply",
    ]
    other_simulator = str(programmed_simulator({"Please": 30}, CHAIN, name="other"))
    # The hash covers every setting alike; these are the ones the issue names.
    changes = [
        [],
        ["--seed", "1"],
        ["--assistant", "python:sim_bots:terse"],
        ["--simulator", other_simulator],
        ["--max-turns", "1"],
        ["--guardrails.max_words", "20"],
        ["--assistant-system", "Be brief."],
    ]
    for number, change in enumerate(changes, 1):
        assert main([*base, *change]) == 0
        printed = capsys.readouterr().out
        # Every configuration simulates its own 4 conversations, never reporting another's as its own.
        assert (summary_row(printed, "conversations simulated"), summary_row(printed, "already done, skipped")) == (
            4,
            0,
        ), change
        assert len(read_records(out)) == 4 * number
    records = read_records(out)
    assert len({r["conversation_id"] for r in records}) == len(records)
    assert {r["assistant"]["system"] for r in records} == {None, "Be brief."}
    # The same configuration again, in any spelling, skips all of its conversations.
    assert main([*base, "--seed", "1", "--batch-size", "3"]) == 0
    printed = capsys.readouterr().out
    assert (summary_row(printed, "conversations simulated"), summary_row(printed, "already done, skipped")) == (0, 4)


def test_failed_conversations_are_retried_on_a_rerun_unless_asked_not_to(tmp_path, programmed_simulator, capsys):
    handler = type("Handler", (FaultyAssistant,), {"mode": "500"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "sim.jsonl"
    config = SimulateConfig(
        simulator=str(programmed_simulator(*TWO_OPENINGS)),
        assistant=f"http://127.0.0.1:{server.server_address[1]}/v1",
        assistant_model="m",
        max_retries=0,
        intents=INTENTS,
        n_per_intent=4,
        max_turns=1,
        out=out,
        progress=False,
    )
    try:
        first = run_simulation(config)
        failed = first["termination_reasons"]["assistant_error"]
        assert 0 < failed < 8
        handler.mode = "ok"  # the assistant is fixed
        kept = run_simulation(dataclasses.replace(config, retry_failed=False))
        assert (kept["conversations"], kept["skipped_already_done"], kept["retried_failed"]) == (0, 8, 0)
        assert sum(r["termination_reason"] == "assistant_error" for r in read_records(out)) == failed
        retried = run_simulation(config)
    finally:
        server.shutdown()
        server.server_close()
    assert (retried["conversations"], retried["skipped_already_done"], retried["retried_failed"]) == (
        failed,
        8 - failed,
        failed,
    )
    records = read_records(out)
    # The failed records are replaced, not kept beside their retries.
    assert len(records) == 8 == len({r["conversation_id"] for r in records})
    assert {r["termination_reason"] for r in records} == {"max_turns"}


def one_sentence_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "Traceback" not in error and error.endswith(".")
    return error


def test_an_out_that_is_not_this_commands_output_is_refused_before_anything_changes(
    tmp_path, intents_file, programmed_simulator, monkeypatch, capsys
):
    (tmp_path / "sim_bots.py").write_text(BOTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    # A real run, had the output not been refused: it would have appended records to the file.
    base = [
        "simulate",
        "--simulator",
        str(programmed_simulator(*TWO_OPENINGS)),
        "--assistant",
        "python:sim_bots:reply",
        "--intents",
        str(intents_file),
        "--no-progress",
    ]
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"note": "mine"}\n{"conversation_id": "x", "turns": []')  # not records, then a torn-looking tail
    others = tmp_path / "others.txt"
    others.write_text("line one\nline two")  # no final newline: the old code cut "line two" off as torn
    for path in (intents_file, notes, others):
        before = path.read_bytes()
        error = one_sentence_error([*base, "--out", str(path)], capsys)
        assert path.read_bytes() == before, error
        if path == intents_file:
            assert (
                error == f"userlm simulate: The output {path} is also an input of this run; "
                "write the conversations to another file."
            )
        else:
            assert error.startswith(
                f"userlm simulate: {path} is not a conversations file of userlm (line 1 is not a conversation record)"
            )
    folder = tmp_path / "runs"
    folder.mkdir()
    assert one_sentence_error([*base, "--out", str(folder)], capsys) == (
        f"userlm simulate: The output {folder} is a folder; give a file path for the "
        f"conversations, such as {folder / 'conversations.jsonl'}."
    )
    assert one_sentence_error([*base, "--out", str(others / "sim.jsonl")], capsys) == (
        f"userlm simulate: Cannot write {others / 'sim.jsonl'}: {others} is a "
        "file, not a folder; choose another output path."
    )
    unwritable = Path("/sys/userlm-test/sim.jsonl")  # read-only even for root
    assert re.fullmatch(
        rf"userlm simulate: Cannot write {unwritable} \(.+\); choose another output path or fix its permissions\.",
        one_sentence_error([*base, "--out", str(unwritable)], capsys),
    )
    # An empty file is an output it may write: the run goes on, here to the missing simulator.
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    missing = [
        "simulate",
        "--simulator",
        str(tmp_path / "no-model"),
        "--assistant",
        "hf:default",
        "--intents",
        str(intents_file),
    ]
    assert str(tmp_path / "no-model") in one_sentence_error([*missing, "--out", str(empty)], capsys)


def test_chat_with_standard_input_closed_keeps_the_transcript(tmp_path, programmed_simulator, intents_file, capsys):
    folder = programmed_simulator(*TWO_OPENINGS)
    out = tmp_path / "chat.jsonl"
    command = [
        sys.executable,
        "-m",
        "userlm.cli",
        "chat",
        "--simulator",
        str(folder),
        "--intent",
        INTENTS[0],
        "--out",
        str(out),
    ]
    # fd 0 closed in the child: Python starts with sys.stdin None, and input() raises RuntimeError.
    finished = subprocess.run(command, preexec_fn=lambda: os.close(0), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr and "Saved the transcript" in finished.stdout
    [record] = read_records(out)
    assert record["termination_reason"] == "assistant_ended"
    assert [t["role"] for t in record["turns"]] == ["user"] and record["turns"][0]["content"] in (
        "Please help me now",
        "Hello there now",
    )
    # Its --out is checked like simulate's, before the simulator loads.
    error = one_sentence_error(
        ["chat", "--simulator", str(tmp_path / "no-model"), "--intent", INTENTS[0], "--out", str(intents_file)], capsys
    )
    assert error.startswith(f"userlm chat: {intents_file} is not a conversations file of userlm")


def test_intents_come_from_text_jsonl_and_prep_s_compressed_conversations(tmp_path):
    """Prep may write conversations.jsonl.gz; its intents feed simulate as they
    are, and a binary file is one sentence."""
    import gzip

    from userlm.infer.simulate import read_input_file

    intent = "You are a user chatting with an assistant language model to plan a trip."
    (tmp_path / "intents.txt").write_text(f"{intent}\n\n")
    (tmp_path / "intents.jsonl").write_text(json.dumps({"intent": intent}) + "\n")
    with gzip.open(tmp_path / "conversations.jsonl.gz", "wt") as out:
        out.write(json.dumps({"intent": intent, "messages": []}) + "\n")
    for name in ("intents.txt", "intents.jsonl", "conversations.jsonl.gz"):
        assert read_input_file(tmp_path / name, "intent") == [intent]
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not a readable UTF-8 text or JSONL file"):
        read_input_file(tmp_path / "binary.txt", "intent")

"""`userlm synth`: the filters and deduplication on hand-built conversations, the export as a
training set an assistant trains on with TRL's SFTTrainer, resuming, and one-sentence refusals."""

from __future__ import annotations

import json

import pytest

from userlm.flipped.format import END_MARKER
from userlm.infer.synth.config import SynthConfig
from userlm.infer.synth.export import messages_of
from userlm.infer.synth.filters import REASONS, filter_conversations
from userlm.infer.synth.run import run_synth

LONG = " ".join(f"word{k}" for k in range(80))


def record(conversation_id: str, users: list[str], *, ended: str = "user_ended", events=(), system=None) -> dict:
    """A conversation record as `userlm simulate` writes it: each user turn answered, then the leaving turn."""
    turns = []
    for k, user in enumerate(users):
        turns.append({"role": "user", "content": user, "events": list(events) if k == 0 else []})
        turns.append({"role": "assistant", "content": f"answer to {user}"})
    if ended == "user_ended":
        turns.append({"role": "user", "content": END_MARKER, "events": []})
    return {
        "conversation_id": conversation_id,
        "intent": "plan a trip",
        "persona": None,
        "trial": 0,
        "seed": 1,
        "simulator": {},
        "assistant": {"system": system},
        "turns": turns,
        "termination_reason": ended,
        "error": None,
        "exhausted_events": [],
        "seconds": 0.1,
    }


def hand_built() -> list[dict]:
    return [
        record("kept", ["I need a trip plan", "Make it three days"]),
        record("exact", ["i NEED a trip plan!", "make it three days..."]),  # r1 up to case and punctuation
        record("long", [LONG, "and one more thing"]),
        record("near", [LONG.replace("word79", "wordX"), "and one more thing"]),  # one word of 80 changed
        record("cut", ["plan my trip", "to Rome"], ended="max_turns"),
        record("sim-error", ["plan a trip"], ended="simulator_error"),
        record("assistant-error", ["plan a trip", "for two"], ended="assistant_error"),
        record("exhausted", ["plan", "a trip"], ended="guardrails_exhausted"),
        record("fallback", ["plan a trip please", "in May"], events=[{"guardrail": "fallback", "action": "keep"}]),
        record("short", ["just one turn here"]),
        record("judged-no", ["what about Lisbon", "for a week"]),
        record("unjudged", ["what about Porto", "for a weekend"]),
    ]


def judge(records: list[dict]) -> dict[str, dict]:
    # Stands in for the suite's judge endpoint (tested in test_infer_suite*); these are its verdict shapes.
    verdicts = {"judged-no": {"success": False, "reason": "no"}, "unjudged": {"success": None, "reason": "failed"}}
    return {r["conversation_id"]: verdicts.get(r["conversation_id"], {"success": True}) for r in records}


def test_every_filter_drops_exactly_its_conversations_and_the_first_duplicate_is_kept():
    records = hand_built()
    asked = []

    def asking(to_judge):
        asked.extend(r["conversation_id"] for r in to_judge)
        return judge(to_judge)

    reasons = filter_conversations(records, min_user_turns=2, require_user_ended=True, near_duplicate=0.8, judge=asking)
    assert reasons == {
        "kept": None,
        "exact": "exact_duplicate",
        "long": None,
        "near": "near_duplicate",
        "cut": "not_ended",
        "sim-error": "broken",
        "assistant-error": "broken",
        "exhausted": "guardrail_fallback",
        "fallback": "guardrail_fallback",
        "short": "too_short",
        "judged-no": "judged_unsuccessful",
        "unjudged": "unjudged",
    }
    assert set(reasons.values()) == {None, *REASONS}
    # The judge is asked only about what passed the outcome checks; duplicates are checked after it.
    assert asked == ["kept", "exact", "long", "near", "judged-no", "unjudged"]


def test_the_filters_settings_change_exactly_what_they_say():
    records = hand_built()
    reasons = filter_conversations(records, min_user_turns=1, require_user_ended=False, near_duplicate=0.0)
    kept = sorted(i for i, reason in reasons.items() if reason is None)
    # No judge, exact duplicates only, max_turns kept, one user turn enough.
    assert kept == ["cut", "judged-no", "kept", "long", "near", "short", "unjudged"]
    assert reasons["exact"] == "exact_duplicate"


def test_the_exported_messages_are_the_assistants_view_without_the_leaving_turn():
    messages = messages_of(record("r", ["hello there", "thanks"], system="Be brief."))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "Be brief." and messages[1]["content"] == "hello there"
    assert END_MARKER not in json.dumps(messages)


def assistant_module(tmp_path, monkeypatch):
    (tmp_path / "synth_assistant.py").write_text(
        "def reply(messages):\n"
        "    users = [m['content'] for m in messages if m['role'] == 'user']\n"
        "    return f'Answer {len(users)} to: ' + messages[0]['content'][:40]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "python:synth_assistant:reply"


@pytest.fixture
def synth_config(tmp_path, monkeypatch, forced_simulator):
    """A tiny simulator that always says `ok` (never ends), against a Python assistant, two turns each."""
    intents = tmp_path / "intents.txt"
    intents.write_text("plan a trip to Rome\nwrite a poem about the sea\nfix my bicycle\n")
    return SynthConfig(
        simulator=str(forced_simulator(always_end=False)),
        assistant=assistant_module(tmp_path, monkeypatch),
        assistant_system="You are a helpful assistant.",
        intents=intents,
        n_per_intent=2,
        max_turns=2,
        max_new_tokens=4,
        guardrails=None,
        require_user_ended=False,
        sharegpt=True,
        progress=False,
        out=tmp_path / "synth",
    )


def test_the_export_loads_with_datasets_trains_an_assistant_one_step_and_keeps_its_roles(
    synth_config, default_tokenizer, tiny_llama
):
    from datasets import load_dataset, load_from_disk
    from trl import SFTConfig, SFTTrainer

    sheet = run_synth(synth_config)
    out = synth_config.out
    # The simulator always says `ok` and the assistant answers alike: all six conversations say the same
    # words, so the first is kept and the other five are exact duplicates, whatever their intent.
    assert sheet["conversations_simulated"] == 6 and sheet["kept"] == 1
    assert sheet["dropped"] == {**dict.fromkeys(sheet["dropped"], 0), "exact_duplicate": 5}
    assert [i["kept"] for i in sheet["intents"]] == [1, 0, 0] and [i["simulated"] for i in sheet["intents"]] == [2] * 3
    datasheet = json.loads((out / "datasheet.json").read_text())
    assert datasheet["kept_conversation_ids"] == sheet["kept_conversation_ids"]
    assert (
        datasheet["settings"]["max_turns"] == 2
        and "| dropped: exact_duplicate | 5 |" in (out / "datasheet.md").read_text()
    )

    loaded = load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    assert loaded.column_names == ["messages"] and len(loaded) == 1
    assert load_from_disk(str(out / "dataset"))["messages"] == loaded["messages"]
    first = loaded[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user", "assistant"]
    assert first[1]["content"] == "ok" and first[2]["content"].startswith("Answer 1 to: You are a helpful")
    sharegpt = json.loads((out / "train.sharegpt.json").read_text())
    assert [t["from"] for t in sharegpt[0]["conversations"]] == ["system", "human", "gpt", "human", "gpt"]

    # The roles survive the real SmolLM2 chat template: the simulator's turns render as the user's.
    rendered = default_tokenizer.apply_chat_template(first, tokenize=False)
    user_at = rendered.index(f"<|im_start|>user\n{first[1]['content']}<|im_end|>")
    assistant_at = rendered.index(f"<|im_start|>assistant\n{first[2]['content']}<|im_end|>")
    assert rendered.index("<|im_start|>system\nYou are a helpful assistant.") < user_at < assistant_at

    trainer = SFTTrainer(
        model=str(tiny_llama()),
        train_dataset=loaded,
        args=SFTConfig(
            output_dir=str(out.parent / "assistant"),
            max_steps=1,
            per_device_train_batch_size=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
        ),
    )
    result = trainer.train()
    assert trainer.state.global_step == 1 and result.training_loss > 0


def test_a_rerun_resumes_and_exports_the_same_set(synth_config):
    first = run_synth(synth_config)
    again = run_synth(synth_config)
    assert first["simulated_now"] == 6 and again["simulated_now"] == 0
    assert again["kept_conversation_ids"] == first["kept_conversation_ids"]


def test_bad_inputs_are_one_sentence(tmp_path, userlm_cli):
    missing = userlm_cli(
        "synth",
        "--simulator",
        "default",
        "--assistant",
        "hf:default",
        "--intents",
        str(tmp_path / "none.txt"),
        "--out",
        str(tmp_path / "a"),
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "No intent file" in missing.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    (tmp_path / "intents.txt").write_text("plan a trip\n")
    foreign = userlm_cli(
        "synth",
        "--simulator",
        "default",
        "--assistant",
        "hf:default",
        "--intents",
        str(tmp_path / "intents.txt"),
        "--out",
        str(tmp_path / "b"),
    )
    assert foreign.returncode == 2 and "notes.txt" in foreign.stderr and foreign.stderr.count("\n") == 1
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_a_run_that_keeps_nothing_writes_an_empty_set_and_no_dataset_folder(tmp_path):
    from userlm.infer.synth.export import datasheet, write_training_set

    (tmp_path / "dataset").mkdir()  # an earlier run's

    files = write_training_set(tmp_path, [], sharegpt=True)
    assert (tmp_path / "train.jsonl").read_text() == "" and json.loads(
        (tmp_path / "train.sharegpt.json").read_text()
    ) == []
    assert "dataset" not in files and not (tmp_path / "dataset").exists()
    cut = [record("cut", ["plan my trip", "to Rome"], ended="max_turns")]
    sheet = datasheet(cut, {"cut": "not_ended"}, {"seed": 0}, None)
    assert sheet["kept"] == 0 and sheet["dropped"]["not_ended"] == 1

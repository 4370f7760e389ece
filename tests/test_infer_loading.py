"""Loading simulators in every supported layout, always rendering with the checkpoint's own template."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from userlm.defaults import smollm2_gguf
from userlm.errors import UserError
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import CHATML, render
from userlm.infer.simulator import UserSimulator

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_tiny_llama, write_flipped_samples  # noqa: E402

PROMPT = [{"role": "system", "content": "You are a user chatting with an assistant language model to learn chess."}]


@pytest.fixture(scope="module")
def lora_output(tmp_path_factory, default_tokenizer):
    """A real `userlm train` LoRA output, trained once for this module (one step): a PEFT adapter on a
    tiny random base that lacked the end marker, the marker's new row trained as PEFT
    `trainable_token_indices`, saved with the tokenizer (marker added, flipped template attached).
    Shared: tests that change the folder copy it first."""
    from userlm.cli import main

    root = tmp_path_factory.mktemp("trained-lora")
    base = make_tiny_llama(root / "base", default_tokenizer)
    out = root / "lora-out"
    recipe = root / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model_name_or_path": str(base),
                "dataset_path": str(write_flipped_samples(root / "prep")),
                "output_dir": str(out),
                "template": "chatml",
                "method": "lora",
                "max_length": 256,
                "per_device_train_batch_size": 4,
                "max_steps": 1,
                "report_to": "none",
                "activation_checkpointing": False,
                "eval_strategy": "no",
                "seed": 0,
            }
        )
    )
    assert main(["train", str(recipe)]) == 0
    return base, out


def test_lora_output_folder_loads_with_its_base_and_new_vocabulary(lora_output):
    import logging

    from peft import PeftModel
    from safetensors.torch import load_file

    base, out = lora_output
    adapter = json.loads((out / "adapter_config.json").read_text())
    # The layout training writes: the end marker's row is a trainable token, not a saved copy of the whole matrix.
    assert adapter["base_model_name_or_path"] == str(base) and not adapter["modules_to_save"]
    [end] = adapter["trainable_token_indices"]["embed_tokens"]
    [trained_row] = load_file(out / "adapter_model.safetensors")[
        "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"
    ]
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: let it speak here
    heard: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda record: heard.append(record.getMessage())
    logging.getLogger("transformers").addHandler(listener)
    sim = UserSimulator.load(out)
    assert sim.template is CHATML and sim.end_token_id == end == len(sim.tokenizer) - 1
    embeddings = sim.model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(sim.tokenizer)
    # The loaded end row is the one training wrote, which moved from its start (a copy of <|im_end|>'s).
    start = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight[sim.eot_token_id]
    assert torch.equal(embeddings[end], trained_row) and not torch.equal(embeddings[end], start)
    # The loaded model is the adapter on its base as PEFT itself applies it.
    reference = AutoModelForCausalLM.from_pretrained(base)
    reference.resize_token_embeddings(len(sim.tokenizer), mean_resizing=False)  # the adapter sets the new row
    reference = PeftModel.from_pretrained(reference, out).eval()
    ids = torch.tensor([sim.prompt_ids(PROMPT)])
    with torch.no_grad():
        assert torch.allclose(sim.model(ids).logits, reference(ids).logits, atol=1e-5)
    # Greedy drafting is that model's argmax, token by token, after the flipped prompt (this
    # barely trained random model writes blank lines: the logits above are what tells models apart).
    [turn] = sim.generate([PROMPT], max_new_tokens=4, temperature=0)
    assert turn.text == greedy_text(sim, PROMPT, 4)
    # The same adapter named explicitly on top of its base gives the same model.
    explicit = UserSimulator.load(base, adapter=out)
    assert torch.equal(explicit.model.get_input_embeddings().weight, embeddings)
    # The adapter's rows replace the new ones: no warning about initialising them that a user cannot act on.
    logging.getLogger("transformers").removeHandler(listener)
    assert not [message for message in heard if "multivariate normal" in message]


def greedy_text(sim: UserSimulator, prompt: list[dict], max_new_tokens: int) -> str:
    """The turn the model's argmax writes after the rendered prompt, computed step by step."""
    rendered = render(sim.tokenizer, sim.template, prompt)
    assert rendered.endswith("<|im_start|>user\n")
    ids = sim.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(sim.model(torch.tensor([ids + generated])).logits[0, -1].argmax())
            if token == sim.end_token_id:
                return END_MARKER
            if token == sim.eot_token_id:
                break
            generated.append(token)
    return sim.tokenizer.decode(generated).strip()


def test_full_and_merged_folders_and_missing_template(tmp_path, lora_output):
    _, out = lora_output
    merged = UserSimulator.load(out)
    folder = tmp_path / "merged"
    merged.model.save_pretrained(folder)
    merged.tokenizer.save_pretrained(folder)
    reloaded = UserSimulator.load(folder)
    assert reloaded.template is CHATML and reloaded.end_token_id == merged.end_token_id
    assert (
        reloaded.generate([PROMPT], seed=3, max_new_tokens=4)[0].text
        == merged.generate([PROMPT], seed=3, max_new_tokens=4)[0].text
    )


def test_ordinary_instruct_model_needs_a_named_template(tiny_llama):
    plain = tiny_llama("plain")  # SmolLM2's own (unflipped) chat template
    with pytest.raises(UserError, match="--template chatml"):
        UserSimulator.load(plain)
    assert UserSimulator.load(plain, template="chatml").template is CHATML
    with pytest.raises(UserError, match="Unknown chat template"):
        UserSimulator.load(plain, template="nope")


@pytest.mark.slow
def test_embedded_gguf_loads_as_a_prompted_simulator(default_simulator):
    sim = UserSimulator.load(smollm2_gguf(), template="chatml")
    assert sim.end_token_id is None
    # The "default" folder holds the GGUF's weights dequantised: both write the same greedy turn.
    [turn] = sim.generate([PROMPT], max_new_tokens=6, temperature=0)
    [expected] = default_simulator().generate([PROMPT], max_new_tokens=6, temperature=0)
    assert turn.text == expected.text == greedy_text(sim, PROMPT, 6) != ""


# ---------------------------------------------------------------- checkpoints shaped like microsoft/UserLM-8b

EOT_ID = "<|eot_id|>"


def test_a_userlm_8b_shaped_checkpoint_loads_as_it_is(userlm_8b_like):
    from userlm.flipped.templates import USERLM_LLAMA3

    folder = userlm_8b_like({"Hello": 30}, {"Hello": {" there": 30}, " there": {EOT_ID: 30}})
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    sim = UserSimulator.load(folder)
    # Its own chat_template.jinja is another text, recognised by what it renders.
    assert sim.tokenizer.chat_template != USERLM_LLAMA3.jinja and sim.template is USERLM_LLAMA3
    # The end marker is an ordinary token: it survives skip_special_tokens.
    end = sim.tokenizer.convert_tokens_to_ids(END_MARKER)
    assert sim.end_token_id == end and sim.tokenizer.decode([end], skip_special_tokens=True) == END_MARKER
    # The two configs name different end tokens; both end a turn.
    assert (
        config["eos_token_id"] == sim.tokenizer.convert_tokens_to_ids("<|end_of_text|>") != generation["eos_token_id"]
    )
    assert {config["eos_token_id"], generation["eos_token_id"]} <= set(sim.stop_token_ids)
    [turn] = sim.generate([PROMPT], max_new_tokens=12)
    assert (turn.text, turn.is_end, turn.finish_reason) == ("Hello there", False, "stop")


@pytest.mark.parametrize("ending", ["<|end_of_text|>", END_MARKER])
def test_a_turn_stops_at_whichever_end_token_the_checkpoint_writes(userlm_8b_like, ending):
    # Without a stop at `ending` the bigram would start over ("Hello there Hello there ...").
    sim = UserSimulator.load(userlm_8b_like({"Hello": 30}, {"Hello": {" there": 30}, " there": {ending: 30}}))
    [turn] = sim.generate([PROMPT], max_new_tokens=12)
    assert (turn.text, turn.is_end, turn.finish_reason) == ("Hello there", ending == END_MARKER, "stop")


def test_simulate_runs_on_a_userlm_8b_shaped_checkpoint(userlm_8b_like, tmp_path, monkeypatch):
    from userlm.cli import main

    folder = userlm_8b_like(
        {"Hello": 30, "Please": 29},
        {
            "Hello": {" there": 30},
            " there": {" friend": 30},
            " friend": {EOT_ID: 30},
            "Please": {" help": 30},
            " help": {" me": 30},
            " me": {EOT_ID: 30},
        },
    )
    (tmp_path / "echo_assistant.py").write_text("def reply(messages):\n    return 'Sure, tell me more.'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "sim.jsonl"
    argv = [
        "simulate",
        "--simulator",
        str(folder),
        "--assistant",
        "python:echo_assistant:reply",
        "--intents",
        str(tmp_path / "i.txt"),
        "--n-per-intent",
        "2",
        "--max-turns",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    (tmp_path / "i.txt").write_text("You are a user chatting with an assistant language model to plan a trip.\n")
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["simulator"]["template"] == "userlm-llama3" for r in records)
    assert all(r["termination_reason"] == "max_turns" for r in records)
    user_turns = [t["content"] for r in records for t in r["turns"] if t["role"] == "user"]
    assert set(user_turns) <= {"Hello there friend", "Please help me"} and len(user_turns) == 4


def test_a_lora_persona_on_a_userlm_8b_shaped_base_adds_no_second_end_marker(
    userlm_8b_like, flipped_samples_dir, tmp_path
):
    from transformers import AutoTokenizer

    from userlm.cli import main

    base = userlm_8b_like()
    before = AutoTokenizer.from_pretrained(base)
    out = tmp_path / "persona"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model_name_or_path": str(base),
                "dataset_path": str(flipped_samples_dir),
                "output_dir": str(out),
                "template": "userlm-llama3",
                "method": "lora",
                "max_length": 256,
                "per_device_train_batch_size": 4,
                "max_steps": 2,
                "report_to": "none",
                "activation_checkpointing": False,
                "eval_strategy": "no",
                "seed": 0,
            }
        )
    )
    assert main(["train", str(recipe)]) == 0
    assert json.loads((out / "train_summary.json").read_text())["added_tokens"] == []
    after = AutoTokenizer.from_pretrained(out)
    assert len(after) == len(before)
    assert [token for token in after.get_vocab() if "endconversation" in token] == [END_MARKER]
    end = after.convert_tokens_to_ids(END_MARKER)
    assert end == before.convert_tokens_to_ids(END_MARKER) and not after.added_tokens_decoder[end].special
    assert not json.loads((out / "adapter_config.json").read_text()).get("trainable_token_indices")
    sim = UserSimulator.load(out)
    assert sim.template.name == "userlm-llama3" and sim.model.get_input_embeddings().weight.shape[0] == len(before)
    assert sim.generate([PROMPT], max_new_tokens=3, seed=1)[0].attempts == 1


# ---------------------------------------------------------- folders that cannot be simulators, prompts that do not fit


def test_a_model_folder_without_weights_is_one_sentence(tiny_llama):
    folder = tiny_llama("no-weights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        UserError,
        match=r"^The model folder .* has no weights \(no model.safetensors\); "
        r"point to a folder that was saved in full\.$",
    ):
        UserSimulator.load(folder)


def test_an_unfinished_train_output_is_refused(lora_output, tmp_path):
    import shutil

    out = shutil.copytree(lora_output[1], tmp_path / "lora-out")
    # `userlm train` marks its folder until the final model is written (train/outputs.py).
    (out / "train_incomplete.json").write_text("{}")
    with pytest.raises(UserError, match="did not finish"):
        UserSimulator.load(out)
    # A run killed before its first final save: checkpoints, and no weights of its own.
    killed = tmp_path / "killed"
    (killed / "checkpoint-2").mkdir(parents=True)
    (killed / "adapter_config.json").write_text((out / "adapter_config.json").read_text())
    with pytest.raises(UserError, match=r"holds training checkpoints but no final model.*checkpoint-2 itself\.$"):
        UserSimulator.load(killed)


def test_a_prompt_longer_than_the_context_is_one_sentence_before_any_generation(tiny_llama):
    sim = UserSimulator.load(
        tiny_llama(
            "short",
        ),
        template="chatml",
    )
    assert sim.context_length == 2048
    long = [{"role": "system", "content": "word " * 3000}]
    with pytest.raises(UserError, match=r"^The conversation is 3,\d{3} tokens and the simulator's context is 2,048"):
        sim.generate([long, PROMPT])
    too_long, fits = sim.generate_each([long, PROMPT], max_new_tokens=3)
    assert isinstance(too_long, UserError) and fits.text
    # Room for the reply counts: a prompt that fits alone does not fit with 2,048 new tokens.
    assert sim.prompt_error(PROMPT, max_new_tokens=2048) is not None and sim.prompt_error(PROMPT) is None


def test_simulate_and_chat_refuse_an_intent_longer_than_the_context_before_running(
    tiny_llama, tmp_path, monkeypatch, capsys
):
    from userlm.cli import main

    folder = tiny_llama("short")  # 2,048 positions
    (tmp_path / "echo_assistant.py").write_text("def reply(messages):\n    return 'Sure.'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "i.txt").write_text("plan a trip\n" + "plan a very long trip " + "word " * 3000 + "\n")
    out = tmp_path / "sim.jsonl"
    simulate = [
        "simulate",
        "--simulator",
        str(folder),
        "--template",
        "chatml",
        "--assistant",
        "python:echo_assistant:reply",
        "--intents",
        str(tmp_path / "i.txt"),
        "--out",
        str(out),
        "--no-progress",
    ]
    chat = [
        "chat",
        "--simulator",
        str(folder),
        "--template",
        "chatml",
        "--intent",
        "word " * 3000,
        "--out",
        str(tmp_path / "chat.jsonl"),
    ]
    for argv, named in (
        (simulate, "The intent 'plan a very long trip word ...' does not fit: the conversation is 3,0"),
        (chat, "The intent 'word word word word word word ...' does not fit: the conversation is 3,0"),
    ):
        assert main(argv) == 2
        message = capsys.readouterr().err
        assert named in message and "context is 2,048" in message and message.count(". ") == 0
    # Refused before any conversation ran: nothing written.
    assert not out.exists() and not (tmp_path / "chat.jsonl").exists()

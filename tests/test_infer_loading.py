"""Loading simulators in every supported layout, always rendering with the checkpoint's own template."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from userlm.data_prep.format import END_MARKER
from userlm.data_prep.templates import CHATML, attach_template, render
from userlm.defaults import smollm2_gguf
from userlm.errors import UserError
from userlm.infer.simulator import UserSimulator

PROMPT = [{"role": "system", "content": "You are a user chatting with an assistant language model to learn chess."}]


@pytest.fixture
def lora_output(tmp_path, tiny_llama, default_tokenizer):
    """A folder shaped like a `userlm train` LoRA output: a PEFT adapter on a tiny base that
    lacked the end marker, saved with the tokenizer (end marker added, flipped template attached)."""
    base = tiny_llama("base")
    tokenizer = copy.deepcopy(default_tokenizer)
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    attach_template(tokenizer, CHATML)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tokenizer))
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens", "lm_head"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        # The new END row is trained with the adapter: make the adapter's copy of it distinctive.
        peft_model.base_model.model.model.embed_tokens.modules_to_save["default"].weight[-1] = 3.0
    out = tmp_path / "lora-out"
    peft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return base, out


def test_lora_output_folder_loads_with_its_base_and_new_vocabulary(lora_output):
    base, out = lora_output
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    sim = UserSimulator.load(out)
    assert sim.template is CHATML and sim.end_token_id == len(sim.tokenizer) - 1
    assert sim.model.get_input_embeddings().weight.shape[0] == len(sim.tokenizer)
    assert torch.all(sim.model.get_input_embeddings().weight[-1] == 3.0)
    # Greedy drafting is the merged model's argmax, token by token, after the flipped prompt.
    [turn] = sim.generate([PROMPT], max_new_tokens=4, temperature=0)
    assert turn.text == greedy_text(sim, PROMPT, 4) != ""
    # The same adapter named explicitly on top of its base gives the same model.
    explicit = UserSimulator.load(base, adapter=out)
    assert torch.equal(explicit.model.get_input_embeddings().weight, sim.model.get_input_embeddings().weight)


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
    assert reloaded.generate([PROMPT], seed=3, max_new_tokens=4)[0].text == merged.generate([PROMPT], seed=3, max_new_tokens=4)[0].text


def test_ordinary_instruct_model_needs_a_named_template(tiny_llama):
    plain = tiny_llama("plain")  # SmolLM2's own (unflipped) chat template
    with pytest.raises(UserError, match="--template chatml"):
        UserSimulator.load(plain)
    assert UserSimulator.load(plain, template="chatml").template is CHATML
    with pytest.raises(UserError, match="Unknown chat template"):
        UserSimulator.load(plain, template="nope")


@pytest.mark.slow
def test_embedded_gguf_loads_as_a_prompted_simulator():
    sim = UserSimulator.load(smollm2_gguf(), template="chatml")
    assert sim.end_token_id is None
    # The "default" folder holds the GGUF's weights dequantised: both write the same greedy turn.
    [turn] = sim.generate([PROMPT], max_new_tokens=6, temperature=0)
    [expected] = UserSimulator.load("default").generate([PROMPT], max_new_tokens=6, temperature=0)
    assert turn.text == expected.text == greedy_text(sim, PROMPT, 6) != ""

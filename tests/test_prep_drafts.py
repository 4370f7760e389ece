"""The one draft parser (docs/design.md#reading-a-drafted-turn): every way a drafted user turn comes back from a
backend, then the same drafts through the local backend on real programmed Llamas."""

from __future__ import annotations

import pytest

from userlm.flipped.drafts import ParsedDraft, parse_draft
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import CHATML, USERLM_LLAMA3
from userlm.infer.guardrails import Guardrails, check_draft
from userlm.infer.simulator import UserSimulator

LLAMA_NEXT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\nSure, here you go."
CHATML_NEXT = "<|im_end|>\n<|im_start|>assistant\nSure, here you go."


@pytest.mark.parametrize("template", [USERLM_LLAMA3, CHATML])
def test_last_words_before_the_end_marker_are_kept_and_the_user_leaves(template):
    draft = parse_draft(f"{template.turn_opening}ok thanks, bye{END_MARKER}", template)
    assert draft == ParsedDraft("ok thanks, bye", ended=True) and draft.text == "ok thanks, bye"
    lone = parse_draft(f"{template.turn_opening}{END_MARKER}", template)
    assert lone == ParsedDraft("", ended=True) and lone.text == END_MARKER


def test_an_end_marker_followed_by_a_run_on_reply_still_ends():
    # What a server that does not stop at the marker returns (UserLM-8b's marker is no EOS).
    assert parse_draft(f"\n{END_MARKER}{LLAMA_NEXT}", USERLM_LLAMA3) == ParsedDraft("", ended=True, cut=True)
    assert parse_draft(f"\n{END_MARKER}assistant\nYou're welcome!", USERLM_LLAMA3, special_tokens_stripped=True).ended


def test_empty_text_from_a_server_that_strips_special_tokens_means_the_user_left():
    assert parse_draft("", CHATML, special_tokens_stripped=True) == ParsedDraft("", ended=True)
    assert parse_draft("\n", USERLM_LLAMA3, special_tokens_stripped=True).ended
    # Not when the model has no end marker (a prompted model), nor when the server keeps special tokens.
    assert parse_draft("", CHATML, special_tokens_stripped=True, has_end_marker=False) == ParsedDraft("", ended=False)
    assert parse_draft("", CHATML) == ParsedDraft("", ended=False)


@pytest.mark.parametrize("template, run_on", [(USERLM_LLAMA3, LLAMA_NEXT), (CHATML, CHATML_NEXT)])
def test_a_draft_that_runs_into_the_next_header_is_cut_at_the_boundary(template, run_on):
    assert parse_draft(f"{template.turn_opening}can you fix it{run_on}", template) == ParsedDraft(
        "can you fix it", ended=False, cut=True
    )
    # A header without the end-of-turn token before it is a boundary too.
    header_only = run_on.replace(template.eot_token, "")
    assert parse_draft(f"can you fix it{header_only}", template).words == "can you fix it"


def test_stripped_boundaries_look_like_each_templates_turn_change():
    # userlm-llama3 without its special tokens glues the role name to the last word.
    llama = parse_draft(
        "\nthanks, that worksassistant\nSure, anything else?", USERLM_LLAMA3, special_tokens_stripped=True
    )
    assert llama == ParsedDraft("thanks, that works", ended=False, cut=True)
    chatml = parse_draft("thanks, that works\nassistant\nSure, anything else?", CHATML, special_tokens_stripped=True)
    assert chatml == ParsedDraft("thanks, that works", ended=False, cut=True)
    # Ordinary words about an assistant are not a boundary.
    for template in (USERLM_LLAMA3, CHATML):
        text = "ask the assistant\nwhat it thinks of user\ninput"
        assert parse_draft(text, template, special_tokens_stripped=True) == ParsedDraft(text, ended=False)
        assert parse_draft(text, template) == ParsedDraft(text, ended=False)


EOT = "<|im_end|>"


def test_the_local_backend_reads_its_drafts_through_the_parser(programmed_simulator):
    # A real Llama programmed to say goodbye and leave in one turn, and one that writes past its turn.
    leaver = UserSimulator.load(
        programmed_simulator({"ok": 30}, {"ok": {" thanks": 30}, " thanks": {END_MARKER: 30}}, name="leaver")
    )
    [turn] = leaver.generate([[{"role": "system", "content": "intent"}]], seed=0)
    assert (turn.text, turn.is_end, turn.finish_reason) == ("ok thanks", True, "stop")
    # The farewell is judged by the termination rule alone (two words pass though min_words is 3).
    guardrails = Guardrails(min_turns_before_end=1)
    [late] = leaver.generate(
        [[{"role": "system", "content": "intent"}, {"role": "user", "content": "a b c"}]], guardrails=guardrails
    )
    assert (late.text, late.is_end, late.events) == ("ok thanks", True, [])
    assert check_draft(
        parse_draft(f"ok thanks{END_MARKER}", CHATML), [{"role": "system", "content": "intent"}], guardrails
    ) == {"guardrail": "end_too_early", "action": "rejected"}
    runner = UserSimulator.load(
        programmed_simulator(
            {"Please": 30},
            {"Please": {" help": 30}, " help": {"<|im_start|>": 30}, "<|im_start|>": {"Sure": 30}, "Sure": {EOT: 30}},
            name="runner",
        )
    )
    [cut] = runner.generate([[{"role": "system", "content": "intent"}]], seed=0)
    assert (cut.text, cut.is_end) == ("Please help", False)


def test_stop_strings_and_the_token_budget(programmed_simulator):
    sim = UserSimulator.load(programmed_simulator({"Tell": 30}, {"Tell": {" more": 30}, " more": {" more": 30}}))
    prompt = [{"role": "system", "content": "intent"}]
    [long] = sim.generate([prompt], max_new_tokens=5)
    assert (long.text, long.finish_reason) == ("Tell more more more more", "length")
    [stopped] = sim.generate([prompt], max_new_tokens=5, stop=(" more more",))
    assert (stopped.text, stopped.finish_reason) == ("Tell", "stop")

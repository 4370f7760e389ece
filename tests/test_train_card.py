"""Checkpoints that explain themselves (issue 27): a real quickstart-shaped LoRA run (the shipped
CPU recipe, `model: default`, on prep's output of the real-format fixtures) writes a model card
that huggingface_hub parses, names no path outside itself, loads when copied to another machine's
folders, and shares its files as the umask says; `userlm eval`'s figures go into that card.

The embedded default is a tiny random Llama with SmolLM2's tokenizer in a cache of this test's
own (USERLM_CACHE), so "default" is exercised end to end in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import make_tiny_llama
from userlm.defaults import SMOLLM2_ID
from userlm.flipped.format import END_MARKER
from userlm.train.card import RESULTS_END, RESULTS_START

FIXTURES = Path(__file__).parent / "fixtures" / "prep"
BINARY = (".safetensors", ".bin", ".pt", ".pth")
# An absolute path at the start of a word, a JSON string or a Markdown code span (not a URL's //).
ABSOLUTE = re.compile(r"(?:^|[\s\"'`(=])(/[A-Za-z][^\s\"'`)]*)")


@pytest.fixture(scope="module")
def run(tmp_path_factory, default_tokenizer):
    """(the finished LoRA output folder, its summary, the test's cache) of a 2-step run under umask 022."""
    from userlm.cli import main

    root = tmp_path_factory.mktemp("card")
    cache = root / "cache"
    make_tiny_llama(cache / "SmolLM2-135M-Instruct", default_tokenizer)
    out = root / "sim"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("USERLM_CACHE", str(cache))
        previous = os.umask(0o022)
        try:
            inputs = [
                str(FIXTURES / name) for name in ("sharegpt.json", "wildchat.jsonl", "lmsys.jsonl", "openai.jsonl")
            ]
            assert (
                main(
                    [
                        "prep",
                        *inputs,
                        "--out",
                        str(root / "prep"),
                        "--personas",
                        "style",
                        "--split",
                        "0.5,0.5,0",
                        "--num_proc",
                        "1",
                        "--no-progress",
                    ]
                )
                == 0
            )
            assert (
                main(
                    [
                        "train",
                        "smollm2-cpu-quickstart",
                        f"dataset_path={root / 'prep'}",
                        f"output_dir={out}",
                        "max_steps=2",
                        "max_train_samples=4",
                        "max_eval_samples=4",
                        "max_length=128",
                        "per_device_train_batch_size=2",
                        "gradient_accumulation_steps=1",
                        "bf16=false",
                    ]
                )
                == 0
            )
        finally:
            os.umask(previous)
    return out, json.loads((out / "train_summary.json").read_text()), cache


def test_the_card_parses_and_says_what_was_trained_on_what_and_how(run):
    from huggingface_hub import ModelCard

    out, summary, _ = run
    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.base_model == SMOLLM2_ID and data.library_name == "peft" and data.pipeline_tag == "text-generation"
    assert {"user-simulator", "userlm-kit", "lora", "template:chatml"} <= set(data.tags) and data.language == ["en"]
    text = card.text
    assert "This model is a fine-tuned version of" not in text  # TRL's generic card is gone
    for needed in (
        f"writes `{END_MARKER}` as its whole turn",
        "`<|im_start|>user\\n`",
        "a turn ends at `<|im_end|>`",  # what and template
        "| sharegpt.json | sharegpt | 5 |",
        "| wildchat.jsonl | wildchat | 4 |",
        "Of 15 records read, 11 conversations",
        "| train | 3 | 2 | 6 | 1 |",
        "Intents: heuristic",
        "Personas: style",
        "languages en",  # data, from prep's stats
        "| method | lora |",
        "| LoRA r / alpha / dropout | 16 / 32 / 0.0 |",
        "| max_steps | 2 |",
        "| learning_rate | 0.0005 |",
        f"| held-out user-turn loss before | {summary['eval_loss_before']:.4f} |",
        f"| held-out user-turn loss after | {summary['eval_loss_after']:.4f} |",
        "not in the intent",
        "English conversations only",
        "sensitive to the prompt",  # the paper's limitations
        "userlm simulate --simulator sim",
        "userlm serve sim",
        "tokenizer.apply_chat_template(messages",
        "eos_token_id=stop",
        f"if turn == '{END_MARKER}':",
        f'from_pretrained("{SMOLLM2_ID}")',
    ):
        assert needed in text, needed


def test_no_file_of_the_checkpoint_names_a_path_outside_it(run):
    out, summary, cache = run
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == SMOLLM2_ID
    assert summary["output_dir"] == "." and summary["init_adapter"] is None
    checked = []
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix not in BINARY:
            text = path.read_text()
            assert not ABSOLUTE.findall(text), (path, ABSOLUTE.findall(text))
            checked.append(path.relative_to(out).as_posix())
    assert {"README.md", "adapter_config.json", "tokenizer_config.json", "train_summary.json"} <= set(checked)
    # The trainer's pickled settings, in the folder and its checkpoints, name only paths inside them.
    pickled = sorted(out.rglob("training_args.bin"))
    assert len(pickled) >= 2
    for path in pickled:
        args = torch.load(path, weights_only=False)
        assert args.output_dir == ("." if path.parent == out else out.name), (path, args.output_dir)
        assert not Path(str(getattr(args, "logging_dir", None) or "")).is_absolute()


def test_a_copied_adapter_loads_where_its_first_folders_are_gone(run, tmp_path, monkeypatch):
    """Another machine: the adapter in another folder, the embedded default in another cache, the old ones gone."""
    import torch

    from userlm.infer.loading import load_model_and_tokenizer

    out, _, cache = run
    copy = shutil.copytree(out, tmp_path / "elsewhere" / "my-simulator")
    other_cache = shutil.copytree(cache, tmp_path / "other-cache")
    monkeypatch.setenv("USERLM_CACHE", str(other_cache))
    hidden = cache.with_name("cache-hidden")
    cache.rename(hidden)
    try:
        model, tokenizer = load_model_and_tokenizer(copy)
    finally:
        hidden.rename(cache)
    assert tokenizer.convert_tokens_to_ids(END_MARKER) == len(tokenizer) - 1
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] >= len(tokenizer)


def test_every_file_is_shared_as_the_umask_says(run, tmp_path):
    from userlm.atomic import atomic_write

    out, _, _ = run
    modes = {
        path.relative_to(out).as_posix(): oct(path.stat().st_mode & 0o777) for path in out.rglob("*") if path.is_file()
    }
    assert "adapter_model.safetensors" in modes  # safetensors 0.8 writes it 0600 through a temporary file
    assert {name: mode for name, mode in modes.items() if mode != "0o644"} == {}
    previous = os.umask(0o002)
    try:
        atomic_write(tmp_path / "group.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "group.txt").stat().st_mode & 0o777 == 0o664


def test_eval_adds_its_section_once_and_replaces_it(run, tmp_path):
    """metrics.json's figures (value, n, ci) go into the card beside the base's; a second eval replaces them."""
    from huggingface_hub import ModelCard

    from userlm.evaluation.card_results import add_card_results
    from userlm.evaluation.intervals import mean_figure

    out, _, _ = run
    folder = shutil.copytree(out, tmp_path / "sim")
    before = (folder / "README.md").read_text()

    def results(hits: list[int]) -> dict:
        figure = mean_figure(hits, seed=0, ids=list(range(len(hits))), unit="conversation", scale=100)
        base = mean_figure([0] * len(hits), seed=0, ids=list(range(len(hits))), unit="conversation", scale=100)
        return {
            "settings": {"data": "/data/prep/test.jsonl.gz", "seed": 0},
            "data": {"samples": 40},
            "checkpoints": {
                "sim": {
                    "path": str(folder),
                    "prompted": False,
                    "role_adherence": figure,
                    "group": {"early": figure},
                    "persona_fidelity": {"value": None, "n": 0, "ci": None},
                },
                "base": {"path": "default", "prompted": True, "role_adherence": base},
            },
            "differences": {
                "base": "base",
                "checkpoints": {"sim": {"role_adherence": {"value": 12.5, "n": 8, "ci": [1.0, 20.0]}}},
            },
        }

    assert add_card_results(results([1, 0, 1, 1, 0, 1, 1, 1]), folder / "eval") == [folder / "README.md"]
    first = ModelCard.load(folder / "README.md")
    assert "| role_adherence | 75 [" in first.text and "| 8 | 0 [0, 0] | 12.5 [1, 20] |" in first.text
    assert "| group.early | 75 [" in first.text and "persona_fidelity" not in first.text
    assert "[eval/report.md](eval/report.md)" in first.text and "/data/prep" not in first.text
    [entry] = [e for e in first.data.eval_results if e.metric_type == "role_adherence"]
    assert entry.metric_value == 75.0 and entry.dataset_split == "test"

    add_card_results(results([1, 1, 1, 1, 1, 1, 1, 1]), tmp_path / "report-elsewhere")
    second = ModelCard.load(folder / "README.md")
    assert second.text.count("## Evaluation") == 1 and "Not evaluated yet" not in second.text
    assert "| role_adherence | 100 [" in second.text and "| role_adherence | 75 [" not in second.text
    assert "outside this checkpoint" in second.text and "[eval/report.md]" not in second.text
    assert len([e for e in second.data.eval_results if e.metric_type == "role_adherence"]) == 1
    # Everything else of the card is as training wrote it.
    assert second.text.split(RESULTS_START)[0].strip() == before.split("---\n", 2)[2].split(RESULTS_START)[0].strip()
    assert second.text.split(RESULTS_END)[1].strip() == before.split(RESULTS_END)[1].strip()


def test_share_files_opens_private_temporary_folders_and_weights(tmp_path):
    """What `mkdtemp` and safetensors leave private (0700, 0600), as the embedded default's cache is built."""
    import tempfile

    from safetensors.torch import save_file

    from userlm.atomic import share_files

    previous = os.umask(0o022)
    try:
        staging = Path(tempfile.mkdtemp(dir=tmp_path))
        (staging / "sub").mkdir()
        save_file({"w": torch.zeros(2)}, staging / "sub" / "model.safetensors")
        assert (staging.stat().st_mode & 0o777, (staging / "sub" / "model.safetensors").stat().st_mode & 0o777) == (
            0o700,
            0o600,
        )
        share_files(staging)
    finally:
        os.umask(previous)
    assert staging.stat().st_mode & 0o777 == 0o755 and (staging / "sub").stat().st_mode & 0o777 == 0o755
    assert (staging / "sub" / "model.safetensors").stat().st_mode & 0o777 == 0o644

"""The loss covers exactly the target user turn and its end-of-turn token (docs/design.md#flipped-samples).

The labels are read from the batches TRL's own collator builds for the trainer, for
both flipped templates, padded and packed (`packing: true`, `packing_strategy: bfd`,
what the GPU default turns on), and compared with literal expected strings.
"""

from __future__ import annotations

import copy
import json

import pytest

from userlm.config import from_dict
from userlm.errors import UserError
from userlm.train.config import TrainConfig
from userlm.train.data import prepare_datasets
from userlm.train.sft import batching_defaults, build_trainer

TARGETS = [
    "how do i sort a list in python",
    "and in reverse order?",
    "<|endconversation|>",
    "write a haiku about rain",
    "<|endconversation|>",
    "whats the capital of peru",
    "thanks! population?",
    "ok bye",
    "<|endconversation|>",
    "fix my sql: selct * from t",
    "<|endconversation|>",
]


def recipe(model, data, out, template, **extra):
    values = {
        "model_name_or_path": str(model),
        "dataset_path": str(data),
        "template": template,
        "output_dir": str(out),
        "method": "full",
        "max_length": 512,
        "per_device_train_batch_size": 4,
        "activation_checkpointing": False,
        "report_to": "none",
    }
    return from_dict(TrainConfig, {**values, **extra})


def training_batches(trainer) -> list[dict]:
    return list(trainer.get_train_dataloader())


def labelled_spans(batches, tokenizer) -> list[str]:
    """Decode each run of labelled tokens in every batch the trainer would train on."""
    spans = []
    for batch in batches:
        for row in batch["labels"].tolist():
            current = []
            for token in row + [-100]:
                if token != -100:
                    current.append(token)
                elif current:
                    spans.append(tokenizer.decode(current, skip_special_tokens=False))
                    current = []
    return spans


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(
    "template, expected",
    [
        ("chatml", [f"{t}<|im_end|>" for t in TARGETS]),
        ("userlm-llama3", [f"\n{t}<|eot_id|>" for t in TARGETS]),
    ],
)
def test_labels_are_the_target_turn_and_its_end_of_turn_token(
    template, expected, packed, flipped_samples_dir, tiny_llama_for, llama3_style_tokenizer, default_tokenizer, tmp_path
):
    tokenizer = llama3_style_tokenizer if template == "userlm-llama3" else default_tokenizer
    model = tiny_llama_for(tokenizer, name=template)
    packing = batching_defaults({}, "flash_attention_2") if packed else {}
    run = build_trainer(recipe(model, flipped_samples_dir, tmp_path / "out", template, **packing))
    batches = training_batches(run.trainer)

    spans = labelled_spans(batches, run.tokenizer)

    assert sorted(spans) == sorted(expected)
    # The literal strings, spelled out once for each template.
    if template == "chatml":
        assert "how do i sort a list in python<|im_end|>" in spans
        assert spans.count("<|endconversation|><|im_end|>") == 4
    else:
        assert "\nhow do i sort a list in python<|eot_id|>" in spans
        assert spans.count("\n<|endconversation|><|eot_id|>") == 4
    # One span per sample: nothing else in any row is trained (no stray header after the turn).
    samples = (
        sum(len(row) for row in run.trainer.train_dataset["seq_lengths"]) if packed else len(run.trainer.train_dataset)
    )
    assert len(spans) == samples == len(TARGETS)
    if packed:
        # Padding-free packing: one row per batch, holding several samples (position ids restart at each).
        assert packing == {"packing": True, "packing_strategy": "bfd"}
        assert all(batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch for batch in batches)
        assert max(int((batch["position_ids"] == 0).sum()) for batch in batches) > 1


def test_without_flash_attention_batches_are_grouped_by_length_not_packed():
    assert batching_defaults({}, "sdpa") == {"train_sampling_strategy": "group_by_length"}
    assert batching_defaults({"packing": False}, "flash_attention_2") == {}


def test_end_marker_is_one_added_special_token(flipped_samples_dir, tiny_llama, tmp_path):
    run = build_trainer(recipe(tiny_llama(), flipped_samples_dir, tmp_path / "out", "chatml"))
    assert run.added_tokens == ["<|endconversation|>"]
    assert run.tokenizer.encode("<|endconversation|>", add_special_tokens=False) == [len(run.tokenizer) - 1]
    assert run.trainer.model.get_input_embeddings().weight.shape[0] == len(run.tokenizer)


def test_long_prompt_loses_its_oldest_exchanges_and_keeps_system_and_target(
    flipped_samples_dir, default_tokenizer, tmp_path
):
    from userlm.flipped.templates import CHATML

    r = recipe("default", flipped_samples_dir, tmp_path / "out", "chatml", max_length=48)
    train, _, report = prepare_datasets(r, default_tokenizer, CHATML, 48)
    assert report["skipped"] == []
    last = train[8]  # c3's end sample: the longest prompt
    assert len(last["input_ids"]) <= 48
    text = default_tokenizer.decode(last["input_ids"])
    assert text.startswith(
        "<|im_start|>system\nYou are a user chatting with an assistant language model to get quick answers.<|im_end|>\n"
    )
    assert "whats the capital of peru" not in text and "Bye!<|im_end|>" in text  # the oldest exchange went
    trained = [t for t, m in zip(last["input_ids"], last["completion_mask"]) if m]
    assert default_tokenizer.decode(trained) == "<|endconversation|><|im_end|>"
    assert report["truncated"] >= 1


def test_sample_whose_system_and_target_do_not_fit_stops_the_run_or_is_listed(
    flipped_samples_dir, default_tokenizer, tmp_path
):
    from userlm.flipped.templates import CHATML

    strict = recipe("default", flipped_samples_dir, tmp_path / "out", "chatml", max_length=24)
    with pytest.raises(UserError, match="do not fit max_length=24 even with their history dropped"):
        prepare_datasets(strict, default_tokenizer, CHATML, 24)

    # At 34 tokens two second turns (long targets) cannot keep their system message, target and some of the
    # assistant turn they answer; they are listed, not dropped silently.
    tokenizer = copy.deepcopy(default_tokenizer)
    tokenizer.add_tokens(["<|endconversation|>"], special_tokens=True)  # as training adds it: one token
    lenient = recipe("default", flipped_samples_dir, tmp_path / "out", "chatml", max_length=34, long_samples="skip")
    train, _, report = prepare_datasets(lenient, tokenizer, CHATML, 34)
    listed = [(s["conversation_id"], s["turn_index"]) for s in report["skipped"] if "split" not in s]
    assert listed == [("c1", 1), ("c3", 1)] and len(train) == len(TARGETS) - 2

    nothing_fits = recipe(
        "default", flipped_samples_dir, tmp_path / "out", "chatml", max_length=24, long_samples="skip"
    )
    with pytest.raises(UserError, match="No training sample fits max_length=24"):
        prepare_datasets(nothing_fits, default_tokenizer, CHATML, 24)


def test_dataset_num_proc_tokenises_in_worker_processes_to_the_same_rows(
    flipped_samples_dir, default_tokenizer, tmp_path, monkeypatch
):
    from datasets import Dataset

    from userlm.flipped.templates import CHATML

    processes = []
    real_map = Dataset.map

    def recording_map(self, function=None, *args, **kwargs):
        if kwargs.get("desc") == "Tokenising flipped samples":
            processes.append(kwargs.get("num_proc"))
        return real_map(self, function, *args, **kwargs)

    monkeypatch.setattr(Dataset, "map", recording_map)

    tokenizer = copy.deepcopy(default_tokenizer)
    tokenizer.add_tokens(["<|endconversation|>"], special_tokens=True)
    one = recipe("default", flipped_samples_dir, tmp_path / "out", "chatml", max_length=34, long_samples="skip")
    two = recipe(
        "default",
        flipped_samples_dir,
        tmp_path / "out",
        "chatml",
        max_length=34,
        long_samples="skip",
        dataset_num_proc=2,
    )
    assert two.sft["dataset_num_proc"] == 2  # SFTConfig's key, under its own name
    train_one, _, report_one = prepare_datasets(one, tokenizer, CHATML, 34)
    train_two, _, report_two = prepare_datasets(two, tokenizer, CHATML, 34)
    assert train_two.to_list() == train_one.to_list() and len(train_two) == len(TARGETS) - 2
    assert report_two == report_one
    assert processes == [None, None, 2, 2]  # train and validation, one process and then two


def test_end_samples_are_repeated_as_the_recipe_says(flipped_samples_dir, default_tokenizer, tmp_path):
    from userlm.flipped.templates import CHATML

    r = recipe("default", flipped_samples_dir, tmp_path / "out", "chatml", end_sample_repeats=3)
    train, _, report = prepare_datasets(r, default_tokenizer, CHATML, 512)
    assert report["end_samples"] == 4 and report["train_samples"] == len(train) == len(TARGETS) + 2 * 4
    end_row = next(
        row
        for row in train
        if default_tokenizer.decode(row["input_ids"]).endswith(
            "Bye!<|im_end|>\n<|im_start|>user\n<|endconversation|><|im_end|>"
        )
    )
    assert sum(row["input_ids"] == end_row["input_ids"] for row in train) == 3


def test_empty_target_still_trains_its_end_of_turn_token(tmp_path, default_tokenizer):
    from userlm.flipped.templates import CHATML

    bad = {"prompt": [{"role": "system", "content": "x"}], "completion": [{"role": "user", "content": ""}]}
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({**bad, "conversation_id": "z", "turn_index": 0}) + "\n")
    # chatml's turn opening is empty, so an empty target leaves only <|im_end|>: one trained token.
    r = recipe("default", data, tmp_path / "out", "chatml")
    train, _, _ = prepare_datasets(r, default_tokenizer, CHATML, 512)
    assert sum(train[0]["completion_mask"]) == 1


def test_jsonl_file_and_hf_folder_are_both_read(flipped_samples_dir, tmp_path):
    from userlm.flipped.samples import load_samples

    from_jsonl = load_samples(flipped_samples_dir)
    from_jsonl.save_to_disk(str(tmp_path / "prep" / "hf"))
    from_hf = load_samples(tmp_path / "prep")
    assert from_hf["train"]["completion"] == from_jsonl["train"]["completion"]
    assert set(from_hf) == {"train", "validation"}
    assert len(load_samples(flipped_samples_dir / "train.jsonl")["train"]) == len(TARGETS)


def test_an_empty_validation_split_is_no_validation_split(flipped_samples_dir, default_tokenizer, tmp_path):
    import shutil

    from userlm.flipped.templates import CHATML
    from userlm.train.sft import load_data, training_args

    # A prep folder whose validation split no user fell into: prep writes it empty. With eval
    # off this once raised "'trained_tokens' column missing" from tokenising no rows.
    (tmp_path / "no-validation").mkdir()
    shutil.copy(flipped_samples_dir / "train.jsonl", tmp_path / "no-validation" / "train.jsonl")
    (tmp_path / "no-validation" / "validation.jsonl").write_text("")
    r = recipe("default", tmp_path / "no-validation", tmp_path / "out", "chatml", eval_strategy="no")
    train_set, validation, _ = load_data(r, training_args(r, "sdpa")[0], default_tokenizer, CHATML)
    assert validation is None and len(train_set) == len(TARGETS)

    asks_for_eval = recipe(
        "default", tmp_path / "no-validation", tmp_path / "out", "chatml", eval_strategy="steps", eval_steps=5
    )
    with pytest.raises(UserError, match="has no validation split; set eval_strategy=no"):
        load_data(asks_for_eval, training_args(asks_for_eval, "sdpa")[0], default_tokenizer, CHATML)

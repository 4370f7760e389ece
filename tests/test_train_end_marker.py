"""Learning to leave (docs/design.md#new-token-rows): where the added <|endconversation|> rows start, read back from
the saved checkpoint, the token rows' own learning rate, and the loss on the CPU (labelled
positions only), on tiny random Llamas with SmolLM2's vocabulary (which lacks the end marker;
its EOS is <|im_end|>)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from userlm.config import from_dict
from userlm.flipped.format import END_MARKER
from userlm.train.config import TrainConfig
from userlm.train.sft import build_trainer

RUN = {
    "template": "chatml",
    "max_length": 256,
    "per_device_train_batch_size": 4,
    "max_steps": 1,
    "activation_checkpointing": False,
    "report_to": "none",
    "seed": 0,
}
DELTA = "base_model.model.model.{}.token_adapter.trainable_tokens_delta"


def untied_llama(folder, tokenizer):
    """A tiny random Llama whose output layer is its own matrix, as Llama-3.1-8B's is."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = ["LlamaForCausalLM"]
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def saved_before_any_step(base, samples, out, **keys):
    """Build the run, save it as it stands (0 steps), and return the saved tensors and the end marker's id."""
    run = build_trainer(
        from_dict(
            TrainConfig,
            {**RUN, "model_name_or_path": str(base), "dataset_path": samples, "output_dir": str(out), **keys},
        )
    )
    run.trainer.save_model(str(out))
    weights = "model.safetensors" if keys.get("method") == "full" else "adapter_model.safetensors"
    return load_file(out / weights), run.tokenizer.convert_tokens_to_ids(END_MARKER), run


@pytest.mark.parametrize("method", ["lora", "full"])
def test_end_marker_rows_start_as_a_copy_of_the_eos_rows_read_back_from_the_checkpoint(
    method, tiny_llama, flipped_samples_dir, default_tokenizer, tmp_path
):
    base = tiny_llama()
    embedding = load_file(base / "model.safetensors")["model.embed_tokens.weight"]
    eos = default_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert default_tokenizer.eos_token == "<|im_end|>"

    saved, end, run = saved_before_any_step(base, flipped_samples_dir, tmp_path / "out", method=method)

    assert run.init_source == "<|im_end|>"
    if method == "lora":
        assert torch.equal(saved[DELTA.format("embed_tokens")], embedding[eos][None])
    else:
        assert saved["model.embed_tokens.weight"].shape[0] == end + 1
        assert torch.equal(saved["model.embed_tokens.weight"][end], embedding[eos])


def test_an_untied_output_layer_gets_its_own_copy_too(flipped_samples_dir, default_tokenizer, tmp_path):
    base = untied_llama(tmp_path / "untied", default_tokenizer)
    initial = load_file(base / "model.safetensors")
    eos = default_tokenizer.convert_tokens_to_ids("<|im_end|>")

    saved, _, _ = saved_before_any_step(base, flipped_samples_dir, tmp_path / "out", method="lora")

    assert torch.equal(saved[DELTA.format("embed_tokens")], initial["model.embed_tokens.weight"][eos][None])
    head_rows = saved["base_model.model.lm_head.token_adapter.trainable_tokens_delta"]
    assert torch.equal(head_rows, initial["lm_head.weight"][eos][None])
    assert not torch.equal(head_rows, saved[DELTA.format("embed_tokens")])  # each matrix copies its own row


def test_mean_start_is_transformers_draw_not_a_copy(tiny_llama, flipped_samples_dir, default_tokenizer, tmp_path):
    base = tiny_llama()
    embedding = load_file(base / "model.safetensors")["model.embed_tokens.weight"]

    saved, _, run = saved_before_any_step(
        base, flipped_samples_dir, tmp_path / "out", method="lora", end_marker_init="mean"
    )

    row = saved[DELTA.format("embed_tokens")][0]
    assert run.init_source is None
    assert not any(torch.equal(row, other) for other in embedding)
    assert torch.allclose(row, embedding.mean(0), atol=0.05)  # a draw around the vocabulary's mean


def test_token_rows_train_at_their_own_learning_rate(tiny_llama, flipped_samples_dir, tmp_path):
    run = build_trainer(
        from_dict(
            TrainConfig,
            {
                **RUN,
                "model_name_or_path": str(tiny_llama()),
                "dataset_path": flipped_samples_dir,
                "output_dir": str(tmp_path / "out"),
                "learning_rate": 1e-3,
                "new_token_learning_rate": 0.05,
                "lr_scheduler_type": "constant",
                "warmup_steps": 0,
            },
        )
    )
    model = run.trainer.model
    rows = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
    lora = next(p for n, p in model.named_parameters() if "lora_B" in n)  # lora_A has no gradient while B is zero
    before_rows, before_lora = rows.detach().clone(), lora.detach().clone()

    run.trainer.train()

    groups = run.trainer.optimizer.param_groups
    own = [g for g in groups if any(p is rows for p in g["params"])]
    assert len(own) == 1 and own[0]["lr"] == 0.05 and own[0]["params"] == [rows]
    assert all(g["lr"] == 1e-3 for g in groups if g is not own[0])
    # Adam's first step moves every coordinate with a gradient by the learning rate of its group.
    assert (rows.detach() - before_rows).abs().max().item() == pytest.approx(0.05, rel=1e-3)
    assert (lora.detach() - before_lora).abs().max().item() == pytest.approx(1e-3, rel=1e-3)


def test_cpu_head_scores_only_labelled_positions_with_the_same_loss_and_gradients(
    tiny_llama, flipped_samples_dir, tmp_path, monkeypatch
):
    """train/trainer.py: on the CPU the fused LM head projects only labelled positions, as TRL does on GPUs."""
    import trl.trainer.utils as trl_utils
    from trl import SFTTrainer

    run = build_trainer(
        from_dict(
            TrainConfig,
            {
                **RUN,
                "model_name_or_path": str(tiny_llama()),
                "dataset_path": flipped_samples_dir,
                "output_dir": str(tmp_path / "out"),
                "lora_dropout": 0.0,  # the two passes must see the same network
            },
        )
    )
    trainer, model = run.trainer, run.trainer.model
    batch = next(iter(trainer.get_train_dataloader()))
    projected = []
    head = trl_utils._ChunkedLogProbFunction

    class Recording(head):
        @staticmethod
        def apply(hidden, *rest):
            projected.append(hidden.shape[0])
            return head.apply(hidden, *rest)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Recording)

    def loss_and_grads(compute_loss):
        model.zero_grad()
        loss = compute_loss(trainer, model, dict(batch))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    compact_loss, compact_grads = loss_and_grads(type(trainer).compute_loss)
    full_loss, full_grads = loss_and_grads(SFTTrainer.compute_loss)

    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert projected == [labelled, batch["labels"][:, 1:].numel()]
    assert 0 < labelled < batch["labels"][:, 1:].numel()
    assert trl_utils._use_triton(torch.device("cpu")) is False  # the switch is restored after the step
    torch.testing.assert_close(compact_loss, full_loss)
    assert compact_grads.keys() == full_grads.keys() and any("trainable_tokens_delta" in n for n in compact_grads)
    for name, grad in compact_grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-7, msg=name)

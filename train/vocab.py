"""The end marker in the vocabulary (docs/design.md#the-end-marker) and the flipped template in the tokenizer.

A base without `<|endconversation|>` gets it as a special token and larger embeddings.
Full fine-tuning trains the new rows anyway. Under LoRA they are trained with PEFT's
`trainable_token_indices` rather than `modules_to_save=["embed_tokens", "lm_head"]`:
only the chosen rows are trained and saved in the adapter (a few KB instead of two full
vocab x hidden matrices, 2 GB for Llama-3.1-8B), it follows tied embeddings, and
`merge_and_unload` writes the rows into the merged model.

Where the new rows start (`end_marker_init`, docs/guide/train.md#the-end-marker): by default a copy
of the base's EOS rows, as the one public re-implementation of UserLM training does. At
the start of a user turn the model's hidden state predicts the turn's first word; a row
copied from a trained token that ends text puts the marker's logit where "stop here"
already lives, a few nats below the likely words, so a short run only has to lift it at
the right places. Transformers' default (`mean`: a draw around the vocabulary's mean)
starts it about 16 nats down (P about 1e-7 on SmolLM2), from where a 25-step LoRA never
brought it up. `eot` copies the template's end-of-turn token instead: for a ChatML
instruct model such as SmolLM2 that is its EOS (`<|im_end|>`) anyway; for a Llama-3
*base* it is the untrained `<|eot_id|>`, which is why `eos` is the default.
"""

from __future__ import annotations

from userlm.errors import UserError
from userlm.flipped.format import END_MARKER
from userlm.flipped.templates import FlippedTemplate, attach_template


def prepare_tokenizer(tokenizer, template: FlippedTemplate) -> list[str]:
    """Add the end marker if missing and attach the flipped template; returns the tokens added."""
    added = []
    if END_MARKER not in tokenizer.get_vocab():
        tokenizer.add_tokens([END_MARKER], special_tokens=True)
        added.append(END_MARKER)
    if template.eot_token not in tokenizer.get_vocab():
        raise UserError(
            f"The template {template.name!r} ends turns with {template.eot_token!r}, which this tokenizer lacks; "
            "pick the template that matches the base model's chat format."
        )
    attach_template(tokenizer, template)
    return added


def resize_embeddings(model, tokenizer, *, mean_resizing: bool = False) -> None:
    """Grow the embeddings to the tokenizer; a base with spare (padded) rows keeps its size.

    New rows are left to `init_new_rows` (or, for an adapter, replaced by its trained rows),
    so transformers' mean resizing is used only when asked for.
    """
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=mean_resizing)


def init_source_token(tokenizer, template: FlippedTemplate, how: str) -> str | None:
    """The token whose rows new tokens copy: the tokenizer's EOS, the template's end of turn, or None (mean)."""
    if how == "mean":
        return None
    token = tokenizer.eos_token if how == "eos" else template.eot_token
    if token is None:
        raise UserError("end_marker_init: eos, but this tokenizer names no eos token; use end_marker_init: eot.")
    return token


def init_new_rows(model, tokenizer, added: list[str], source: str | None) -> None:
    """Copy `source`'s embedding and output rows into the rows of the added tokens (all ranks under ZeRO-3)."""
    import contextlib

    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not added or source is None:
        return
    rows = tokenizer.convert_tokens_to_ids(added)
    source_row = tokenizer.convert_tokens_to_ids(source)
    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:
        weights.append(head.weight)  # untied output layer (Llama-3.1-8B); a tied one shares the rows
    gathered = contextlib.nullcontext()
    if is_deepspeed_zero3_enabled():
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(weights, modifier_rank=0)
    with gathered, torch.no_grad():
        for weight in weights:
            weight[rows] = weight[source_row].clone()


def token_rows_to_train(tokenizer, added: list[str], extra: list[str]) -> list[int]:
    """Ids of the embedding rows LoRA must train: new tokens plus those the recipe names."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in extra if t not in vocab]
    if missing:
        raise UserError(
            f"trainable_tokens names {missing[0]!r}, which is not in the tokenizer; remove it from the recipe."
        )
    return sorted({vocab[t] for t in [*added, *extra]})

"""The end marker in the vocabulary (DESIGN.md 3.5) and the flipped template in the tokenizer.

A base without `<|endconversation|>` gets it as a special token and larger embeddings.
Full fine-tuning trains the new rows anyway. Under LoRA they are trained with PEFT's
`trainable_token_indices` rather than `modules_to_save=["embed_tokens", "lm_head"]`:
only the chosen rows are trained and saved in the adapter (a few KB instead of two full
vocab x hidden matrices, 2 GB for Llama-3.1-8B), it follows tied embeddings, and
`merge_and_unload` writes the rows into the merged model.
"""

from __future__ import annotations

from userlm.data_prep.format import END_MARKER
from userlm.data_prep.templates import FlippedTemplate, attach_template
from userlm.errors import UserError


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


def resize_embeddings(model, tokenizer) -> None:
    """Grow the embeddings to the tokenizer; a base with spare (padded) rows keeps its size."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def token_rows_to_train(tokenizer, added: list[str], extra: list[str]) -> list[int]:
    """Ids of the embedding rows LoRA must train: new tokens plus those the recipe names."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in extra if t not in vocab]
    if missing:
        raise UserError(f"trainable_tokens names {missing[0]!r}, which is not in the tokenizer; remove it from the recipe.")
    return sorted({vocab[t] for t in [*added, *extra]})

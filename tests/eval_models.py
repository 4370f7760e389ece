"""Tiny real models with hand-set weights for the evaluation tests.

`make_trigger_model` builds a one-layer Llama whose first generated token depends on
whether one token (the trigger) occurs anywhere in the context: it answers `when_present`
if it does and `otherwise` if not, then ends its turn. A bigram model (tests/conftest.py)
cannot do this: every flipped prompt ends with the same user header.

How: attention is uniform (zero query and key projections, so RoPE multiplies zeros), and
the value projection reads only the trigger's embedding direction, so the attention output
at the last position is (triggers in context / tokens in context) times a large constant,
written into a residual direction of its own. The output layer maps that direction to
`when_present`, and the ordinary-token direction to `otherwise` with a smaller logit, so the
trigger wins whenever it is present and `otherwise` wins by a wide margin when it is not.
The two answer tokens have a much larger embedding on a third direction, mapped to the
end-of-turn token, so after answering the model closes its turn.
"""

from __future__ import annotations

import copy
from pathlib import Path

# Residual directions.
ORDINARY, TRIGGER, SEEN, ANSWERED = 0, 1, 2, 3
HIDDEN = 16
# Attention output when one trigger is among n context tokens: VALUE * sqrt(HIDDEN) / n,
# far above the ordinary direction's 1 for any context these tests build (n < 2000).
VALUE = 5000.0
# An answer token's embedding: large enough that the attention output cannot outweigh it.
ANSWER = 1e6
# Logits (after the final norm): the trigger's answer, the plain answer, the end of the turn.
TRIGGERED_LOGIT, PLAIN_LOGIT, CLOSE_LOGIT = 40.0, 30.0, 40.0


def one_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{text!r} is not one token: {ids}"
    return ids[0]


def make_trigger_model(
    folder: Path, tokenizer, *, trigger: str, when_present: str, otherwise: str, flipped: bool = True
) -> Path:
    """A Llama that answers `when_present` if the token `trigger` is in its context, else `otherwise`.

    flipped=True saves it as a chatml simulator checkpoint (the flipped template attached and
    `<|endconversation|>` in the vocabulary, so `when_present` may be the end marker); flipped=False
    keeps the tokenizer's own chat template, for serving as an ordinary chat model.
    Token texts must be single tokens as they occur in context (" goodbye", not "goodbye").
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from userlm.flipped.format import END_MARKER
    from userlm.flipped.templates import CHATML, attach_template

    tokenizer = copy.deepcopy(tokenizer)
    if flipped:
        tokenizer.add_tokens([END_MARKER], special_tokens=True)
        attach_template(tokenizer, CHATML)
    eot = tokenizer.convert_tokens_to_ids(CHATML.eot_token)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    trigger_id = one_token(tokenizer, trigger)
    answers = [one_token(tokenizer, when_present), one_token(tokenizer, otherwise)]
    scale = HIDDEN**0.5  # RMSNorm turns a one-hot vector into sqrt(HIDDEN) times it
    with torch.no_grad():
        for weight in model.parameters():
            weight.zero_()
        layer = model.model.layers[0]
        for norm in (layer.input_layernorm, layer.post_attention_layernorm, model.model.norm):
            norm.weight.fill_(1.0)
        embeddings = model.model.embed_tokens.weight
        embeddings[:, ORDINARY] = 1.0
        embeddings[trigger_id] = 0.0
        embeddings[trigger_id, TRIGGER] = 1.0
        for answer in answers:
            embeddings[answer] = 0.0
            embeddings[answer, ANSWERED] = ANSWER
        # Query and key stay zero: every position gets the same attention weight.
        layer.self_attn.v_proj.weight[0, TRIGGER] = VALUE
        layer.self_attn.o_proj.weight[SEEN, 0] = 1.0
        model.lm_head.weight[answers[0], SEEN] = TRIGGERED_LOGIT / scale
        model.lm_head.weight[answers[1], ORDINARY] = PLAIN_LOGIT / scale
        model.lm_head.weight[eot, ANSWERED] = CLOSE_LOGIT / scale
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_bigram_model(folder: Path, tokenizer, template, *, transitions: dict[str, dict[str, float]]) -> Path:
    """A Llama whose next-token logits depend only on the current token, saved as a simulator
    checkpoint with `template` attached and `<|endconversation|>` in the vocabulary.

    `transitions[source][target]` is the logit of `target` after `source`; every other logit is 0,
    so P(target | source) = e^logit / (sum of e^logit over the named targets + the other tokens).
    The layers' output projections are zero, so the last hidden state is the current token's
    embedding; each named source has an embedding direction of its own, every other token direction 0.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from userlm.flipped.format import END_MARKER
    from userlm.flipped.templates import attach_template

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    attach_template(tokenizer, template)
    hidden = 16
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-12,  # so the logits are the ones set here, to float precision
    )
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    scale = hidden**0.5  # RMSNorm turns a one-hot vector into sqrt(hidden) times it
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings.zero_()
        embeddings[:, 0] = 1.0
        model.lm_head.weight.zero_()
        for state, (source, logits) in enumerate(transitions.items(), start=1):
            embeddings[one_token(tokenizer, source)] = 0.0
            embeddings[one_token(tokenizer, source), state] = 1.0
            for target, logit in logits.items():
                model.lm_head.weight[one_token(tokenizer, target), state] = logit / scale
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def always_human(texts: list[str]) -> list[float]:
    """A naturalness detector (`module:function`) that calls every text human."""
    return [1.0] * len(texts)

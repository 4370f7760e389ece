"""The flipped chat templates (docs/design.md#chat-templates) and the one place samples become token ids.

A flipped template renders every message in its natural role and always ends by
opening a *user* turn, so generation continues as the user. `userlm-llama3` is
byte-identical to UserLM-8b's template; `chatml` is the same idea for ChatML models.

Samples are tokenised here rather than by TRL: TRL renders `prompt + completion`
through the chat template and trains on everything after the common prefix, which
with an always-open user header would train a stray header after each completion
(docs/design.md#chat-templates). Training and evaluation both call `tokenize_sample`, so the
perplexity mask is the loss mask by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FlippedTemplate:
    name: str
    jinja: str
    # The text a generated user turn starts with (what follows the open user header).
    turn_opening: str
    # The token that ends a turn: generation stops there and training labels include it.
    eot_token: str

    def completion_text(self, target: str) -> str:
        """What the model must generate after the prompt: the user turn and its end-of-turn token."""
        return f"{self.turn_opening}{target}{self.eot_token}"


USERLM_LLAMA3 = FlippedTemplate(
    name="userlm-llama3",
    jinja=(
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n' + message['content'] + '<|eot_id|>' }}"
        "{% endfor %}"
        "{{ '<|start_header_id|>user<|end_header_id|>' }}"
    ),
    turn_opening="\n",
    eot_token="<|eot_id|>",
)

CHATML = FlippedTemplate(
    name="chatml",
    jinja=(
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{{ '<|im_start|>user\\n' }}"
    ),
    turn_opening="",
    eot_token="<|im_end|>",
)

TEMPLATES = {t.name: t for t in (USERLM_LLAMA3, CHATML)}


def get_template(name: str) -> FlippedTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}; choose one of: {', '.join(TEMPLATES)}.")
    return TEMPLATES[name]


# A conversation whose rendering tells the flipped templates apart from each other and from
# ordinary chat templates (which end with an assistant header, or nothing).
PROBE = (
    {"role": "system", "content": "Probe intent."},
    {"role": "user", "content": "First probe turn."},
    {"role": "assistant", "content": "Probe reply."},
    {"role": "user", "content": "Second probe turn."},
    {"role": "assistant", "content": "Another probe reply."},
)


def template_of(tokenizer) -> FlippedTemplate:
    """The flipped template a tokenizer's own chat template renders like (a checkpoint must be
    rendered with its own).

    Recognised by what it renders, not by its text: UserLM-8b ships its own
    `chat_template.jinja`, a different string that renders exactly like `userlm-llama3`.
    """
    for template in TEMPLATES.values():
        if tokenizer.chat_template == template.jinja or renders_like(tokenizer, template):
            return template
    raise ValueError(
        "This tokenizer has no userlm flipped chat template; train it with `userlm train` "
        "or attach one with `userlm.flipped.templates.attach_template`."
    )


def renders_like(tokenizer, template: FlippedTemplate) -> bool:
    """Whether the tokenizer's own chat template renders the probe conversations exactly as
    `template` does, with and without `add_generation_prompt` (a flipped template ignores it)."""
    if not isinstance(tokenizer.chat_template, str):
        return False
    for messages in (list(PROBE), list(PROBE[:1]), list(PROBE[1:3])):
        expected = render(tokenizer, template, messages)
        for add_generation_prompt in (False, True):
            try:
                rendered = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            except Exception:  # a template that refuses the probe (roles, raise_exception) is not flipped
                return False
            if rendered != expected:
                return False
    return True


def attach_template(tokenizer, template: FlippedTemplate) -> None:
    """Save the flipped template into the tokenizer so inference cannot pick another."""
    tokenizer.chat_template = template.jinja


def render(tokenizer, template: FlippedTemplate, messages: list[dict]) -> str:
    """A flipped prompt as text: `messages` rendered with `template`, ending with an open user turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template.jinja)


def tokenize_sample(tokenizer, template: FlippedTemplate, sample: dict) -> dict:
    """Token ids of prompt + completion and a mask that is 1 exactly on the trained tokens.

    The prompt and the completion are tokenised separately and concatenated, so the
    boundary is exact whatever the tokenizer's merges across it.
    """
    prompt_text = render(tokenizer, template, sample["prompt"])
    completion_text = template.completion_text(sample["completion"][0]["content"])
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    return {
        "input_ids": prompt_ids + completion_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }


def read_prompt(tokenizer, template: FlippedTemplate, text: str) -> list[dict]:
    """The messages of a flipped prompt rendered with `template` (what `render` wrote), for a
    server that receives rendered prompts; ValueError if `text` is not one."""
    one = render(tokenizer, template, [{"role": "ROLE", "content": "CONTENT"}])
    two = render(
        tokenizer, template, [{"role": "ROLE", "content": "CONTENT"}, {"role": "ROLE2", "content": "CONTENT2"}]
    )
    head = one[: one.index("ROLE")]
    middle = one[one.index("ROLE") + 4 : one.index("CONTENT")]
    closing = two[two.index("CONTENT") + 7 : two.index("ROLE2")][: -len(head) or None]
    opening = one[one.index("CONTENT") + 7 + len(closing) :]
    message = re.compile(
        f"{re.escape(head)}(system|user|assistant){re.escape(middle)}(.*?){re.escape(closing)}", re.DOTALL
    )
    if not text.endswith(opening):
        raise ValueError(
            f"not a flipped prompt rendered with the {template.name} template: it does not end by opening a user turn"
        )
    body, messages, position = text[: len(text) - len(opening)], [], 0
    while position < len(body):
        match = message.match(body, position)
        if match is None:
            raise ValueError(f"not a flipped prompt rendered with the {template.name} template")
        messages.append({"role": match.group(1), "content": match.group(2)})
        position = match.end()
    return messages

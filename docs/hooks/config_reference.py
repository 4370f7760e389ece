"""MkDocs hook: the configuration reference page, generated from the config dataclasses.

A key's help is written once, in its field's metadata (`field(metadata={"help": ...})`);
`userlm COMMAND --help` and this page both read it through `userlm.config.config_keys`,
so the two cannot disagree. The page is added to the site's files at build time
(`reference/configuration.md`); it is not a file in the repository.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing

from mkdocs.structure.files import File

PAGE = "reference/configuration.md"

# (command, its config class's name, what else it takes). The class is looked up where the
# command's own module (`userlm.cli.COMMANDS`) finds it, else in that package's `config`
# module, so the page follows a module that moves.
COMMANDS = (
    ("prep", "PrepConfig", "Words that are not a YAML file, a flag or `key=value` are the `inputs`."),
    (
        "train",
        "TrainConfig",
        "Besides these, every TRL `SFTConfig` field under its own name (`learning_rate`, `max_steps`, `max_length`, "
        "`per_device_train_batch_size`, `deepspeed`, `resume_from_checkpoint`, `report_to`, ...), checked against "
        "`SFTConfig`'s types; `completion_only_loss` and `assistant_only_loss` are fixed by the run.",
    ),
    ("merge", "MergeConfig", "The word after the command is the `adapter`."),
    ("simulate", "SimulateConfig", ""),
    ("chat", "ChatConfig", ""),
    ("synth", "SynthConfig", ""),
    ("serve", "ServeConfig", "The word after the command is the `simulator`."),
    (
        "test",
        "SuiteConfig",
        "An intent may also be a mapping of `intent`, `name` and `thresholds`; "
        "a persona a mapping of `persona` and `name`.",
    ),
    ("eval", "EvalConfig", ""),
    ("extrinsic", "ExtrinsicConfig", ""),
    ("calibrate", "CalibrateConfig", ""),
)

INTRO = """# Configuration reference

Every key of every command, generated from the config dataclasses when the site is built:
the help below is the help `userlm COMMAND --help` prints. Each key is a key of the
command's YAML file, a flag (`--key-with-dashes`, or `--key_with_underscores`), a
`key=value` word and a keyword of the config's constructor; a nested key (`guardrails.min_words`)
is a YAML mapping, a dotted flag or a dotted word. Later sources win: the defaults, the YAML
file, `key=value` words, flags. How configuration works: [Configuration](../configuration.md).

"""


def load(command: str, name: str):
    """The config class of `userlm COMMAND`."""
    from userlm.cli import COMMANDS as CLI

    module = importlib.import_module(CLI[command][0].split(":")[0])
    if not hasattr(module, name):
        module = importlib.import_module(module.__name__.rsplit(".", 1)[0] + ".config")
    return getattr(module, name)


def cell(text: str) -> str:
    """Text for a table cell: code spans kept, `|` and `<` escaped outside them."""
    parts = re.split(r"(`[^`]*`)", " ".join(str(text).split()))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part.replace("|", "\\|"))
        else:
            out.append(
                part.replace("\\", "\\\\")
                .replace("|", "\\|")
                .replace("<", "&lt;")
                .replace(">", "&gt;")
                .replace("*", "\\*")
            )
    return "".join(out)


def default_of(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    from userlm.config import to_dict

    value = to_dict(value)
    if value is None:
        return "`null`"
    if isinstance(value, dict):
        return "(the keys below)" if value else "`{}`"
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(map(str, value)) + "]`" if value else "`[]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def fields_by_key(cls) -> dict[str, dataclasses.Field]:
    """Every field, nested ones under their dotted keys."""
    from userlm.config import nested_config_class

    found = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        found[f.name] = f
        nested = nested_config_class(hints[f.name])
        if nested is not None:
            for g in dataclasses.fields(nested):
                found[f"{f.name}.{g.name}"] = g
    return found


def bounds(metadata: dict) -> str:
    words = []
    if "min" in metadata:
        words.append(f"at least {metadata['min']}")
    if "above" in metadata:
        words.append(f"more than {metadata['above']}")
    if "max" in metadata:
        words.append(f"at most {metadata['max']}")
    if metadata.get("nonempty"):
        words.append("not empty")
    return "; ".join(words)


def command_section(command: str, name: str, note: str) -> str:
    from userlm.config import config_keys, describe

    cls = load(command, name)
    fields = fields_by_key(cls)
    lines = [
        f"## `userlm {command}`",
        "",
        f"`{cls.__module__}.{cls.__name__}`" + (f". {note}" if note else ""),
        "",
        "| key | type | default | help |",
        "|---|---|---|---|",
    ]
    for key, (annotation, metadata, shown) in config_keys(cls).items():
        if not shown:
            continue
        field = fields[key]
        help_text = metadata.get("help", "")
        limits = bounds(metadata)
        if limits:
            help_text = f"{help_text} ({limits})" if help_text else limits
        lines.append(f"| `{key}` | {cell(describe(annotation))} | {default_of(field)} | {cell(help_text)} |")
    return "\n".join(lines) + "\n"


def reference_page() -> str:
    return INTRO + "\n".join(command_section(*command) for command in COMMANDS)


def on_files(files, config):
    files.append(File.generated(config, PAGE, content=reference_page()))
    return files

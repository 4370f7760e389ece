"""MkDocs hook: the quickstart's closing table, taken from the README, so it is written once.

The README holds the table between `<!-- quickstart-table: ... -->` and
`<!-- /quickstart-table -->`; a page that says `<!-- quickstart-table -->` on a line of its
own gets the same table there. A README without the markers fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDER = "<!-- quickstart-table -->"
BETWEEN = re.compile(r"^<!-- quickstart-table:[^\n]*-->\n(.*?)^<!-- /quickstart-table -->", re.S | re.M)


def readme_table(config) -> str:
    readme = Path(config.config_file_path).parent / "README.md"
    match = BETWEEN.search(readme.read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"{readme} has no quickstart table between its quickstart-table markers")
    return match.group(1).strip("\n")


def on_page_markdown(markdown, page, config, files):
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, readme_table(config))

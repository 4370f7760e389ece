"""The docs site builds with --strict, its configuration reference is generated from the config
dataclasses, and every citation of the design in the repository points at a section it has.

Needs the `docs` extra (`make docs`, which `.ci/run` runs before the suite); skips, saying so,
without it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A citation of the design: docs/design.md, optionally with a section anchor.
CITATION = re.compile(r"docs/design\.md(?:#([A-Za-z0-9_-]+))?")
SCANNED = ("*.py", "*.md", "*.yaml", "*.yml", "*.toml", "Makefile")
SKIPPED_DIRS = {".venv", ".git", "out", "build", "dist", "__pycache__"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]', or make docs)")
    pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]', or make docs)")
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def page_text(site: Path, page: str) -> str:
    """A built page's text, tags dropped and entities decoded, whitespace collapsed."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", raw)).split())


def test_the_configuration_reference_holds_each_key_with_its_help_from_the_dataclass(site):
    from userlm.data_prep.config import PrepConfig
    from userlm.infer.guardrails import Guardrails

    text = page_text(site, "reference/configuration")
    for cls, key in ((PrepConfig, "near_dup_threshold"), (Guardrails, "min_turns_before_end")):
        help_text = next(f for f in dataclasses.fields(cls) if f.name == key).metadata["help"]
        assert help_text in text, f"the help of {key} is not in the configuration reference"
    for command in ("prep", "train", "merge", "simulate", "chat", "serve", "test", "eval"):
        assert f"userlm {command}" in text
    assert "guardrails.min_turns_before_end" in text  # nested keys under their dotted names


def test_the_quickstart_page_shows_the_readme_quickstart_table(site):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- quickstart-table:", 1)[1].split("<!-- /quickstart-table -->", 1)[0]
    first_row = next(line for line in table.splitlines() if line.startswith("| ") and "---" not in line)
    first_cell = first_row.strip("| ").split(" | ")[0]
    assert first_cell in page_text(site, "quickstart")


def repository_files():
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_DIRS and not name.endswith(".egg-info")]
        for name in names:
            if any(fnmatch.fnmatch(name, pattern) for pattern in SCANNED):
                yield Path(folder) / name


def test_every_design_citation_points_at_a_section_of_the_design(site):
    anchors = set(re.findall(r'id="([^"]+)"', (site / "design" / "index.html").read_text(encoding="utf-8")))
    broken = []
    for path in repository_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for match in CITATION.finditer(line):
                if match.group(1) and match.group(1) not in anchors:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: #{match.group(1)}")
    assert not broken, "citations of sections the design does not have:\n" + "\n".join(broken)


def test_nothing_cites_a_design_file_outside_the_repository():
    """The planning notes the project started from are not in the repository; the design of record is docs/design.md."""
    stale = re.compile(r"(?<![/\w])DESIGN(?:\.md)?\s+(?:section\s+)?\d|DESIGN\.md")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in repository_files()
        if path.name != "test_docs.py"
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if stale.search(line)
    ]
    assert not found, "citations of a DESIGN.md outside the repository:\n" + "\n".join(found)


def test_the_readme_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
        if "://" not in target and not (ROOT / target).exists()
    ]
    assert not missing, f"README links to files that do not exist: {missing}"

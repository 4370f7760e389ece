"""The work folder of one prep run: where each stage keeps what it finished, so a killed run
resumes where it stopped.

    .OUT.prep-work/            beside OUT, so the final swap is a rename on one file system
      plan.json                what the run is (options, inputs, their formats): a resume must match it
      lock                     held (flock) while a prep runs, so two preps never share the folder
      scan/NNNNNN.*            pass 1, one set of files per chunk
      decide/NNNNNN.json       which records of each chunk are kept, after the corpus-wide steps
      users/NNNNNN.*, personas/PPPP.json(l)   per-user personas, grouped by user (only with personas)
      write/NNNNNN.*           pass 2: each chunk's samples, conversations and rejections
      out/                     the output folder being assembled; LLM caches live here from the start
      ready.json               out/ is complete; it holds the inode the swap will put at OUT

A stage's file set for one chunk is complete when its `.json` exists: that file is written
last, atomically, so a kill leaves either the whole set or a set that is redone.
"""

from __future__ import annotations

import json
from pathlib import Path

from userlm.atomic import write_json


class Work:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.root = self.out.parent / f".{self.out.name}.prep-work"
        self.staged = self.root / "out"

    def file(self, stage: str, number: int, suffix: str) -> Path:
        return self.root / stage / f"{number:06d}{suffix}"

    def marker(self, stage: str, number: int) -> Path:
        return self.file(stage, number, ".json")

    def done(self, stage: str, number: int) -> dict | None:
        """A finished unit's summary (its marker), or None when it must be (re)done."""
        path = self.marker(stage, number)
        return json.loads(path.read_text()) if path.exists() else None

    def finish(self, stage: str, number: int, summary: dict) -> None:
        write_json(self.marker(stage, number), summary)

    def stage_folder(self, stage: str) -> Path:
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
        return folder

"""Inputs cut into chunks: the unit of work a worker process takes, and what a resumed run skips.

A chunk is a slice of one input whose records any process can read again, identically:
the planner (`plan_chunks`) cuts every input the same way on every run, so chunk N of a
resumed run is chunk N of the interrupted one. How a container is cut:

- `lines`: JSONL bytes [start, stop) of an uncompressed file, cut after a newline; the
  worker reads them itself, so the planner only scans for newlines to number the lines.
- `blob`: JSONL from a gzip file, decompressed by the planner (gzip cannot be read from
  the middle) and carried to the worker.
- `items`: records of a JSON array, parsed by the planner (an array has nothing like a
  newline to cut at) and carried to the worker.
- `parquet`: one row group of a Parquet file; `dataset`: rows [start, stop) of one split
  of a datasets folder (memory-mapped, so any process can slice it).
"""

from __future__ import annotations

import codecs
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path

from .reading import (
    Rejection,
    lines,
    load_dataset_folder,
    location,
    open_input,
    parquet_file,
    parse_line,
    read_dataset_rows,
    read_json_array,
    read_parquet_rows,
)

# Rows per chunk where the container counts rows, not bytes (about 4 KB a conversation).
BYTES_PER_ROW = 4096


@dataclass
class Chunk:
    number: int  # position among all chunks of the run: the name of its work files
    path: Path
    fmt: str | None
    kind: str
    start: int = 0
    stop: int = 0
    first: int = 1  # number of the first line (lines, blob) or index of the first record
    split: str | None = None
    data: bytes | list | None = None
    size: int = 0  # bytes of the input it covers, for progress

    def records(self, only: Container[int] | None = None) -> Iterator[tuple[int, dict, dict | Rejection]]:
        """(position, location, raw record or Rejection) of every record of the chunk, in
        order; with `only`, just the records at those positions (the others are not parsed)."""
        if self.kind in ("lines", "blob"):
            records = self._lines(only)
        elif self.kind == "items":
            records = self.data
        elif self.kind == "parquet":
            records = read_parquet_rows(self.path, self.start, self.first)
        else:
            records = read_dataset_rows(self.path, self.split, self.start, self.stop)
        for position, (where, raw) in enumerate(records):
            if only is None or position in only:
                yield position, where, raw

    def _lines(self, only) -> Iterator[tuple[dict, dict | Rejection | None]]:
        if self.kind == "blob":
            data = self.data
        else:
            with open(self.path, "rb") as stream:
                stream.seek(self.start)
                data = stream.read(self.stop - self.start)
        pieces = data.split(b"\n")
        last = pieces.pop()  # b"" when the chunk ends with a newline
        position = 0
        for number, piece in enumerate(pieces, start=self.first):
            if piece.strip():
                wanted = only is None or position in only
                yield location(self.path, line=number), parse_line(piece + b"\n") if wanted else None
                position += 1
        if last.strip():
            yield location(self.path, line=self.first + len(pieces)), parse_line(last)

    def spec(self) -> dict:
        """What rebuilds a chunk that carries no data (`Chunk(**spec)`), as JSON."""
        return {
            "number": self.number,
            "path": str(self.path),
            "fmt": self.fmt,
            "kind": self.kind,
            "start": self.start,
            "stop": self.stop,
            "first": self.first,
            "split": self.split,
            "size": self.size,
        }


def plan_chunks(inputs: list[tuple[Path, str | None]], chunk_bytes: int) -> Iterator[Chunk]:
    """The chunks of every input (path and its format), numbered across inputs, lazily."""
    number = 0
    for path, fmt in inputs:
        with open_input(path) as opened:
            if opened.container == "jsonl":
                pieces = _line_ranges(path, chunk_bytes)
            elif opened.container == "jsonl-gz":
                pieces = _blobs(opened, chunk_bytes)
            elif opened.container == "json-array":
                pieces = _items(opened, chunk_bytes)
            elif opened.container == "parquet":
                pieces = _row_groups(path)
            else:
                pieces = _dataset_ranges(path, chunk_bytes)
            for piece in pieces:
                yield Chunk(number=number, path=Path(path), fmt=fmt, **piece)
                number += 1


def _line_ranges(path: Path, chunk_bytes: int) -> Iterator[dict]:
    """Byte ranges of about `chunk_bytes`, each ending after a newline (the last one maybe not)."""
    with open(path, "rb") as stream:
        start = len(codecs.BOM_UTF8) if stream.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0
        stream.seek(start)
        first, pending = 1, 0  # pending: bytes read past the last newline, so holding none
        while True:
            block = stream.read(chunk_bytes)
            if not block:
                if pending:
                    yield dict(kind="lines", start=start, stop=start + pending, first=first, size=pending)
                return
            cut = block.rfind(b"\n")
            if cut < 0:  # a line longer than a chunk: the chunk grows to hold it
                pending += len(block)
                continue
            size = pending + cut + 1
            yield dict(kind="lines", start=start, stop=start + size, first=first, size=size)
            start += size
            first += block.count(b"\n", 0, cut + 1)
            pending = len(block) - cut - 1


def _blobs(opened: open_input, chunk_bytes: int) -> Iterator[dict]:
    first, blob, position = 1, [], 0
    size = 0
    for line in lines(opened.stream):
        blob.append(line)
        size += len(line)
        if size >= chunk_bytes:
            data = b"".join(blob)
            yield dict(kind="blob", data=data, first=first, size=opened.position() - position)
            first += len(blob)
            blob, size, position = [], 0, opened.position()
    if blob:
        yield dict(kind="blob", data=b"".join(blob), first=first, size=opened.position() - position)


def _items(opened: open_input, chunk_bytes: int) -> Iterator[dict]:
    items, size, first = [], 0, 0
    for where, record, chars in read_json_array(opened.path, opened.stream):
        items.append((where, record))
        size += chars
        if size >= chunk_bytes:
            yield dict(kind="items", data=items, first=first, size=size)
            first += len(items)
            items, size = [], 0
    if items:
        yield dict(kind="items", data=items, first=first, size=size)


def _row_groups(path: Path) -> Iterator[dict]:
    metadata = parquet_file(path).metadata
    first = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        yield dict(
            kind="parquet", start=group, stop=group + 1, first=first, size=metadata.row_group(group).total_byte_size
        )
        first += rows


def _dataset_ranges(path: Path, chunk_bytes: int) -> Iterator[dict]:
    rows_per_chunk = max(1, chunk_bytes // BYTES_PER_ROW)
    for split, dataset in load_dataset_folder(path).items():
        for start in range(0, len(dataset), rows_per_chunk):
            stop = min(start + rows_per_chunk, len(dataset))
            yield dict(
                kind="dataset", start=start, stop=stop, first=start, split=split, size=(stop - start) * BYTES_PER_ROW
            )

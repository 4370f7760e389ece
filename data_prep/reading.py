"""Reading raw records out of log files, whatever the container (docs/design.md#inputs, docs/design.md#bad-input).

`open_input(path)` checks a file or folder once and says which container it is: a JSON
array, JSONL, JSONL.gz (or .json.gz), Parquet or a `datasets` folder saved with
`save_to_disk`. `read_file(path)` yields `(location, record)` for every record of it;
`chunks.py` reads the same containers a slice at a time with the pieces below. A record
that cannot be read yields a `Rejection` in its place instead of stopping the run. A file
that cannot be opened at all raises `UserError`.

Container reason codes:
- `malformed_json`: a line (or array element) that is not valid JSON.
- `truncated_record`: the file ends inside a record (a cut-off JSON array or last line).
- `non_utf8`: the record's bytes are not valid UTF-8. Rejected, not repaired: guessing
  the encoding would put mojibake into training text.
"""

from __future__ import annotations

import codecs
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from userlm.errors import UserError

CHUNK_BYTES = 8 << 20
# Undecodable bytes survive the incremental decoder as lone surrogates (surrogateescape).
UNDECODABLE = re.compile("[\udc80-\udcff]")
WHITESPACE_AND_COMMAS = re.compile(r"[\s,]*")
CONTAINERS = ("datasets", "parquet", "json-array", "jsonl", "jsonl-gz")


@dataclass
class Rejection:
    reason: str
    detail: str


def location(path: Path, *, line: int | None = None, record: int | None = None, split: str | None = None) -> dict:
    where: dict = {"file": str(path)}
    if split is not None:
        where["split"] = split
    if line is not None:
        where["line"] = line
    if record is not None:
        where["record"] = record
    return where


def container_of(path: Path) -> str:
    """Which container `path` is, from its name and first bytes; UserError when none."""
    with open_input(path) as opened:
        return opened.container


class open_input:
    """`with open_input(path) as opened:` the container (`opened.container`) and, for the
    JSON containers, a binary stream of the decoded file (`opened.stream`: gunzipped, the
    byte order mark dropped) and the position of the raw file (`opened.position()`)."""

    def __init__(self, path: Path):
        self.path = path = Path(path)
        self.stream = self.raw = None
        if not path.exists():
            raise UserError(f"The input {path} does not exist; check the path.")
        if path.is_dir():
            self.container = "datasets"
            return
        suffixes = "".join(path.suffixes[-2:]).lower()
        if suffixes.endswith(".parquet"):
            self.container = "parquet"
            return
        try:
            self.raw = open(path, "rb")
        except OSError as error:
            raise UserError(f"Cannot read {path} ({error.strerror}); check its permissions.") from None
        stream = _Gunzip(self.raw) if suffixes.endswith(".gz") else self.raw
        try:
            head = _read_head(stream)
        except zlib.error as error:
            self.raw.close()
            raise UserError(f"Cannot read {path} as gzip ({error}); check that it is a readable log file.") from None
        head = head.removeprefix(codecs.BOM_UTF8)  # some exporters on Windows write one
        first = head.lstrip()[:1]
        if first not in (b"[", b"{", b""):
            self.raw.close()
            raise UserError(f"Cannot read {path}: it is neither JSON, JSONL, JSONL.gz, Parquet nor a datasets folder.")
        self.container = "json-array" if first == b"[" else "jsonl-gz" if suffixes.endswith(".gz") else "jsonl"
        self.stream = _Headed(stream, head)

    def position(self) -> int:
        return self.raw.tell() if self.raw else 0

    def __enter__(self) -> open_input:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.raw:
            self.raw.close()


def read_file(path: Path) -> Iterator[tuple[dict, dict | Rejection]]:
    """Every record of one input, in order."""
    with open_input(path) as opened:
        if opened.container == "datasets":
            yield from read_dataset_rows(opened.path)
        elif opened.container == "parquet":
            yield from read_parquet_rows(opened.path)
        elif opened.container == "json-array":
            for where, record, _ in read_json_array(opened.path, opened.stream):
                yield where, record
        else:
            for number, line in enumerate(lines(opened.stream), start=1):
                if line.strip():
                    yield location(opened.path, line=number), parse_line(line)


def _read_head(stream) -> bytes:
    """The first bytes, up to the first non-whitespace one (or 64 KiB)."""
    head = b""
    while len(head) < 1 << 16:
        data = stream.read(4096)
        if not data:
            break
        head += data
        if head.strip():
            break
    return head


class _Gunzip:
    """Decompresses a gzip file chunk by chunk, keeping everything before a cut-off end.

    gzip.GzipFile raises EOFError on a truncated file and loses the data decompressed
    within that read; a cut-off .jsonl.gz must still yield every complete line.
    """

    def __init__(self, raw):
        self.raw = raw
        self.inflate = zlib.decompressobj(wbits=31)

    def read(self, n: int) -> bytes:
        while True:
            if self.inflate.eof:
                rest = self.inflate.unused_data
                if not rest:
                    rest = self.raw.read(1 << 20)
                if not rest:
                    return b""
                # A gzip file may hold several members one after another.
                self.inflate = zlib.decompressobj(wbits=31)
                data = self.inflate.decompress(rest)
            else:
                compressed = self.raw.read(1 << 20)
                if not compressed:
                    return self.inflate.flush()
                data = self.inflate.decompress(compressed)
            if data:
                return data


class _Headed:
    """A binary stream that starts with the already-read head; corrupt compressed data
    reads as the end of the stream, so what was decompressed before it still counts."""

    def __init__(self, stream, head: bytes):
        self.stream, self.pending = stream, head

    def read(self, n: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        try:
            return self.stream.read(n)
        except zlib.error:
            return b""


def lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a binary stream, each with its newline (the last one without, if cut)."""
    rest = b""
    while True:
        data = stream.read(CHUNK_BYTES)
        if not data:
            if rest:
                yield rest
            return
        pieces = (rest + data).split(b"\n")
        rest = pieces.pop()
        for line in pieces:
            yield line + b"\n"


def parse_line(line: bytes) -> dict | Rejection:
    """One JSONL line (with its newline, unless the file was cut inside it)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejection("non_utf8", f"invalid UTF-8 byte at offset {error.start} of the line")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        cut = not line.endswith(b"\n")
        return Rejection(
            "truncated_record" if cut else "malformed_json",
            ("the file ends inside this line: " if cut else "") + error.msg,
        )


def read_json_array(path: Path, raw) -> Iterator[tuple[dict, dict | Rejection, int]]:
    """(location, record or Rejection, characters it took) of every element of a JSON array read
    from the binary stream `raw`; stream-parsed with `raw_decode` over a growing buffer.

    json.load would need the whole file to be valid; real dumps are often cut off
    mid-record, and every complete record before the cut must still be read.
    """
    decoder = json.JSONDecoder()
    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    buffer = text_decoder.decode(raw.read(CHUNK_BYTES))
    position = buffer.index("[") + 1
    eof = False
    index = 0
    while True:
        position = WHITESPACE_AND_COMMAS.match(buffer, position).end()
        if position >= len(buffer) and not eof:
            buffer, position = buffer[position:], 0
            data = raw.read(CHUNK_BYTES)
            eof = not data
            buffer += text_decoder.decode(data, final=eof)
            continue
        if buffer.startswith("]", position):
            return
        if position >= len(buffer):
            yield (
                location(path, record=index),
                Rejection("truncated_record", "the file ends before the JSON array is closed"),
                0,
            )
            return
        try:
            record, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError as error:
            if not eof:
                # Most likely the record runs past the buffer: read more and try again.
                buffer, position = buffer[position:], 0
                data = raw.read(CHUNK_BYTES)
                eof = not data
                buffer += text_decoder.decode(data, final=eof)
                continue
            # A JSON array has no record boundaries to resynchronise on, so a broken element
            # ends the file: the rest is reported as this one rejection, with its size.
            rest = len(buffer) - position
            if buffer.rstrip().endswith("]"):
                yield (
                    location(path, record=index),
                    Rejection(
                        "malformed_json", f"{error.msg}; the rest of the array ({rest} characters) could not be read"
                    ),
                    rest,
                )
            else:
                yield (
                    location(path, record=index),
                    Rejection("truncated_record", f"the file ends inside this record ({rest} characters)"),
                    rest,
                )
            return
        if UNDECODABLE.search(buffer, position, end):
            yield (
                location(path, record=index),
                Rejection("non_utf8", "the record contains bytes that are not UTF-8"),
                end - position,
            )
        else:
            yield location(path, record=index), record, end - position
        position = end
        index += 1


def parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a broken file
        raise UserError(f"Cannot read {path} as Parquet ({error}); check the file.") from None


def read_parquet_rows(path: Path, row_group: int | None = None, first: int = 0) -> Iterator[tuple[dict, dict]]:
    """The rows of a Parquet file (or of one of its row groups, whose first row is number `first`)."""
    parquet = parquet_file(path)
    groups = None if row_group is None else [row_group]
    index = first
    for batch in parquet.iter_batches(batch_size=2048, row_groups=groups):
        for row in batch.to_pylist():
            yield location(path, record=index), row
            index += 1


def load_dataset_folder(path: Path) -> dict:
    """{split name or None: Dataset} of a folder saved with `save_to_disk` (memory-mapped, not read)."""
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as error:  # load_from_disk raises FileNotFoundError and others
        raise UserError(
            f"Cannot read the folder {path} as a datasets folder saved with save_to_disk ({type(error).__name__}); "
            "pass a file or a saved dataset."
        ) from None
    return dict(loaded) if isinstance(loaded, DatasetDict) else {None: loaded}


def read_dataset_rows(
    path: Path, split: str | None = None, start: int = 0, stop: int | None = None
) -> Iterator[tuple[dict, dict]]:
    """The rows of a datasets folder (or rows [start, stop) of one of its splits)."""
    parts = load_dataset_folder(path)
    for name, dataset in parts.items() if stop is None else [(split, parts[split])]:
        end = len(dataset) if stop is None else stop
        for index, row in enumerate(dataset.select(range(start, end)), start=start):
            yield location(path, record=index, split=name), row

"""Reading raw records out of log files, whatever the container (DESIGN.md 4.1, 4.3).

`read_file(path)` yields `(location, record)` for every record of a JSON array, JSONL,
JSONL.gz (or .json.gz), Parquet file or a `datasets` folder saved with `save_to_disk`.
A record that cannot be read yields a `Rejection` in its place instead of stopping the
run. A file that cannot be opened at all raises `UserError`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from userlm.errors import UserError

CHUNK_BYTES = 8 << 20
# Undecodable bytes survive the incremental decoder as lone surrogates (surrogateescape).
UNDECODABLE = re.compile("[\udc80-\udcff]")
WHITESPACE_AND_COMMAS = re.compile(r"[\s,]*")


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


def read_file(path: Path, *, progress: bool = False) -> Iterator[tuple[dict, dict | Rejection]]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"The input {path} does not exist; check the path.")
    if path.is_dir():
        yield from _read_datasets_folder(path)
        return
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(".parquet"):
        yield from _read_parquet(path)
        return
    try:
        raw_file = open(path, "rb")
    except OSError as error:
        raise UserError(f"Cannot read {path} ({error.strerror}); check its permissions.") from None
    stream = _Gunzip(raw_file) if suffixes.endswith(".gz") else raw_file
    try:
        head = _read_head(stream)
    except zlib.error as error:
        raw_file.close()
        raise UserError(f"Cannot read {path} as gzip ({error}); check that it is a readable log file.") from None
    head = head.removeprefix(codecs.BOM_UTF8)  # some exporters on Windows write one
    first = head.lstrip()[:1]
    if first not in (b"[", b"{", b""):
        raw_file.close()
        raise UserError(
            f"Cannot read {path}: it is neither JSON, JSONL, JSONL.gz, Parquet nor a datasets folder."
        )
    with raw_file, tqdm(
        total=path.stat().st_size, desc=f"reading {path.name}", unit="B", unit_scale=True, disable=not progress
    ) as bar:
        raw = _Counted(stream, head, bar, raw_file)
        if first == b"[":
            yield from _read_json_array(path, raw)
        else:
            yield from _read_jsonl(path, raw)


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


class _Counted:
    """A binary stream that starts with the already-read head and ticks a progress bar
    with the position in the file on disk (compressed bytes for gzip)."""

    def __init__(self, stream, head: bytes, bar, raw_file):
        self.stream, self.pending, self.bar, self.raw_file = stream, head, bar, raw_file

    def read(self, n: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
        else:
            data = self.stream.read(n)
        self.bar.update(self.raw_file.tell() - self.bar.n)
        return data

    def readlines(self) -> Iterator[bytes]:
        rest = b""
        while True:
            try:
                data = self.read(CHUNK_BYTES)
            except zlib.error:
                # Corrupt compressed data: what was decompressed so far still counts.
                data = b""
            if not data:
                if rest:
                    yield rest
                return
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"


def _read_jsonl(path: Path, raw: _Counted) -> Iterator[tuple[dict, dict | Rejection]]:
    for number, line in enumerate(raw.readlines(), start=1):
        if not line.strip():
            continue
        where = location(path, line=number)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield where, Rejection("non_utf8", f"invalid UTF-8 byte at offset {error.start} of the line")
            continue
        try:
            yield where, json.loads(text)
        except json.JSONDecodeError as error:
            cut = not line.endswith(b"\n")
            yield where, Rejection(
                "truncated_record" if cut else "malformed_json",
                ("the file ends inside this line: " if cut else "") + error.msg,
            )


def _read_json_array(path: Path, raw: _Counted) -> Iterator[tuple[dict, dict | Rejection]]:
    """Stream-parse a JSON array with `raw_decode` over a growing buffer.

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
            yield location(path, record=index), Rejection("truncated_record", "the file ends before the JSON array is closed")
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
                yield location(path, record=index), Rejection(
                    "malformed_json", f"{error.msg}; the rest of the array ({rest} characters) could not be read"
                )
            else:
                yield location(path, record=index), Rejection(
                    "truncated_record", f"the file ends inside this record ({rest} characters)"
                )
            return
        if UNDECODABLE.search(buffer, position, end):
            yield location(path, record=index), Rejection("non_utf8", "the record contains bytes that are not UTF-8")
        else:
            yield location(path, record=index), record
        position = end
        index += 1


def _read_parquet(path: Path) -> Iterator[tuple[dict, dict | Rejection]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a broken file
        raise UserError(f"Cannot read {path} as Parquet ({error}); check the file.") from None
    index = 0
    for batch in parquet.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            yield location(path, record=index), row
            index += 1


def _read_datasets_folder(path: Path) -> Iterator[tuple[dict, dict | Rejection]]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as error:  # load_from_disk raises FileNotFoundError and others
        raise UserError(
            f"Cannot read the folder {path} as a datasets folder saved with save_to_disk ({type(error).__name__}); "
            "pass a file or a saved dataset."
        ) from None
    parts = loaded.items() if isinstance(loaded, DatasetDict) else [(None, loaded)]
    for split, dataset in parts:
        assert isinstance(dataset, Dataset)
        for index, row in enumerate(dataset):
            yield location(path, record=index, split=split), row

"""Reading tweet dumps as they come: gzip or plain, UTF-8 (with or without BOM),
UTF-16, Latin-1/CP1252; ``,`` ``;`` or tab delimited; quoted fields with newlines;
NUL bytes; huge fields. Streams the file: memory does not grow with its size.

Every data row comes out with its line number, or as a :class:`BadRow` that says why
it cannot be read, so the caller can dead-letter it and carry on.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

MAX_FIELD_CHARS = 1_000_000  # a larger cell is dead-lettered, not loaded
SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t")

csv.field_size_limit(MAX_FIELD_CHARS)


class DumpError(ValueError):
    """The file cannot be read as a CSV dump at all."""


@dataclass(frozen=True)
class DumpFormat:
    compressed: bool
    encoding: str
    delimiter: str
    header: list[str]

    def describe(self) -> str:
        delimiter = {"\t": "tab", ",": "comma", ";": "semicolon"}[self.delimiter]
        return (f"{'gzip, ' if self.compressed else ''}{self.encoding}, {delimiter}-delimited, "
                f"{len(self.header)} columns")


@dataclass(frozen=True)
class Row:
    line: int
    cells: dict[str, str]


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str
    content: str


class _CountingReader(io.RawIOBase):
    """Reports bytes read from the file on disk (compressed or not) for progress bars."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._raw, self._on_read = raw, on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer) or 0
        self._on_read(n)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def detect_encoding(sample: bytes, complete: bool = True) -> str:
    """The encoding of a file from its first bytes; ``complete``: the sample is the whole file."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if sample:
        # UTF-16 without a BOM: ASCII-range text has a NUL in every other byte.
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        if odd > len(sample) // 4 and even < len(sample) // 50:
            return "utf-16-le"
        if even > len(sample) // 4 and odd < len(sample) // 50:
            return "utf-16-be"
    try:
        # A partial sample may end inside a multi-byte character: allow an incomplete tail.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        sample.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"  # decodes any byte sequence


def detect_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def open_dump(path: Path, on_read: Callable[[int], None] = lambda n: None) -> tuple[DumpFormat, Iterator[Row | BadRow], IO]:
    """Detect the dump's format and return it with an iterator over its data rows.

    The third value is the open file; close it when done (or use :func:`read_dump`).
    """
    raw = io.BufferedReader(_CountingReader(open(path, "rb"), on_read), buffer_size=1 << 20)
    compressed = raw.peek(2)[:2] == b"\x1f\x8b"
    binary: IO[bytes] = io.BufferedReader(gzip.GzipFile(fileobj=raw), buffer_size=1 << 20) \
        if compressed else raw
    try:
        sample = binary.peek(SAMPLE_BYTES)[:SAMPLE_BYTES]
    except (OSError, EOFError) as exc:
        raw.close()
        raise DumpError(f"{path}: cannot read ({exc})") from None
    encoding = detect_encoding(sample, complete=len(sample) < SAMPLE_BYTES)
    text = io.TextIOWrapper(binary, encoding=encoding, errors="replace", newline="")
    header_line = ""
    while not header_line.strip():
        header_line = text.readline()
        if not header_line:
            text.close()
            raise DumpError(f"{path}: the file is empty (no header row)")
    header_line = header_line.replace("\x00", "")
    delimiter = detect_delimiter(header_line)
    header = [h.strip().lstrip("\ufeff") for h in next(csv.reader([header_line], delimiter=delimiter))]
    dump_format = DumpFormat(compressed, encoding.replace("-sig", " (BOM)"), delimiter, header)
    return dump_format, _rows(text, header, delimiter), text


def _rows(text: IO[str], header: list[str], delimiter: str) -> Iterator[Row | BadRow]:
    # The csv module refuses NUL characters; they carry nothing, so they are dropped.
    lines = (line.replace("\x00", "") if "\x00" in line else line for line in text)
    reader = csv.reader(lines, delimiter=delimiter)
    width = len(header)
    line = 1  # the header was line 1; reader.line_num counts from after it
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = 1 + reader.line_num
            yield BadRow(start, f"unreadable CSV: {exc}", "")
            continue
        line = 1 + reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != width:
            yield BadRow(start, f"ragged row: {len(cells)} fields, header has {width}",
                         delimiter.join(cells)[:10_000])
            continue
        yield Row(start, dict(zip(header, cells)))

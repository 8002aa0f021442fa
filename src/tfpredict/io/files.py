"""Input files: which files a list of paths, globs and directories names, and each one's format."""

from __future__ import annotations

import glob
import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import InputError

#: File name endings -> format. Compression (".gz") is recognised on top of these.
FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfr": "tfrecord",
}


@dataclass(frozen=True)
class InputFile:
    """An input file, its format ("csv", "parquet", "jsonl", "tfrecord") and compression ("gzip"/None)."""

    path: Path
    format: str
    compression: str | None = None

    def __str__(self) -> str:
        return str(self.path)

    @property
    def is_tsv(self) -> bool:
        """A tab-separated text file ("rows.tsv", "rows.tsv.gz")."""
        return self.path.name.lower().split(".")[-2 if self.compression else -1] == "tsv"

    @property
    def delimiter(self) -> str:
        """The field separator of a CSV file: a tab for .tsv, else a comma."""
        return "\t" if self.is_tsv else ","

    def open_text(self, newline: str | None = None) -> IO[str]:
        """The file as UTF-8 text, gunzipped when it is compressed."""
        if self.compression:
            return gzip.open(self.path, "rt", encoding="utf-8", newline=newline)
        return open(self.path, encoding="utf-8", newline=newline)


def detect_format(path: Path) -> InputFile:
    """The format of a file from its name ("data.csv.gz" -> csv + gzip); InputError if unknown."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = None
    if suffixes and suffixes[-1] in (".gz", ".gzip"):
        compression = "gzip"
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputError(f"{path}: unknown input format (expected a file ending in {known}, optionally .gz)")
    if fmt == "parquet" and compression:
        raise InputError(f"{path}: gzip-compressed Parquet is not supported (Parquet compresses internally)")
    return InputFile(path, fmt, compression)


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[InputFile]:
    """Files named by paths, globs and directories (all known-format files inside, sorted), in order given."""
    files: list[InputFile] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _known(p))
            if not found:
                raise InputError(f"{path}: directory contains no CSV, Parquet, JSON Lines or TFRecord files")
            files.extend(detect_format(p) for p in found)
        elif path.exists():
            files.append(detect_format(path))
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise InputError(f"{text}: no input file matches this pattern")
            files.extend(detect_format(m) for m in matches)
        else:
            raise InputError(f"{text}: input file not found")
    if not files:
        raise InputError("no input files given")
    return files


def _known(path: Path) -> bool:
    try:
        detect_format(path)
    except InputError:
        return False
    return not path.name.startswith(".")


def estimate_rows(files: Sequence[InputFile], sample_bytes: int = 1 << 20) -> int | None:
    """Total input rows for a progress bar's ETA: exact for Parquet, estimated for uncompressed text files
    from the lines in their first MB; None when a file gives no cheap estimate (gzip, TFRecord)."""
    total = 0
    for f in files:
        if f.format == "parquet":
            n = _parquet_rows(f)
        elif f.format in ("csv", "jsonl") and not f.compression:
            n = _estimate_lines(f.path, sample_bytes) - (1 if f.format == "csv" else 0)
        else:
            n = None
        if n is None:
            return None
        total += max(n, 0)
    return total


def _estimate_lines(path: Path, sample_bytes: int) -> int:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        sample = fh.read(sample_bytes)
    lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") or not sample else 1)
    if len(sample) >= size:
        return lines
    return round(lines * size / max(len(sample), 1))


def _parquet_rows(file: InputFile) -> int | None:
    """The rows in a Parquet file's footer (None when it cannot be read: this is only an estimate)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(str(file.path)).metadata.num_rows
    except Exception:  # noqa: BLE001 - only a progress estimate
        return None


def input_bytes(files: Sequence[InputFile]) -> int:
    return sum(f.path.stat().st_size for f in files)


__all__ = [
    "FORMATS",
    "InputFile",
    "detect_format",
    "estimate_rows",
    "expand_inputs",
    "input_bytes",
]

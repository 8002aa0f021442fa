"""The sample: the first rows of the user's data read with the job's own reader (and timed doing it), and
the same rows written back as a file of each format for the pipelined runs and the format sweep.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import InputError, TfpredictError
from ..io.readers import Chunk, InputFile, expand_inputs, read_inputs
from ..io.writers import open_writer

log = logging.getLogger(__name__)

#: Rows kept as the sample. Enough for stable rates at any batch size we sweep by default; a fast pipeline
#: runs its pipelined passes several times over it instead of reading more of the file.
MAX_SAMPLE_ROWS = 500_000
MAX_SAMPLE_BYTES = 256 << 20


@dataclass
class Sample:
    """The first rows of the user's data as the reader produced them, and how long reading them took."""

    files: list[InputFile]
    chunks: list[Chunk]
    rows: int  # rows kept as the sample
    read_rows: int  # rows read to time the reader (>= rows)
    read_seconds: float
    exhausted: bool  # the whole input was read
    first_rows: int = 0  # rows of the first chunk
    startup_seconds: float = 0.0  # the wait for the first chunk

    def steady_rate(self) -> tuple[int, float]:
        """(rows, seconds) of reading after the first chunk, when there was enough of it to time."""
        rows, seconds = self.read_rows - self.first_rows, self.read_seconds - self.startup_seconds
        if rows >= 4 * max(self.first_rows, 1) and seconds > 0.01:
            return rows, seconds
        return self.read_rows, self.read_seconds

    def table(self) -> pa.Table:
        return pa.Table.from_batches([c.batch for c in self.chunks if c.batch.num_rows])

    def truncate(self, rows: int) -> None:
        """Keep only the chunks holding the first `rows` rows (whole chunks)."""
        kept, chunks = 0, []
        for c in self.chunks:
            if kept >= rows:
                break
            chunks.append(c)
            kept += c.num_rows
        self.chunks, self.rows = chunks, kept


def read_sample(
    files: list[InputFile],
    schema: dict[str, Any],
    batch_size: int,
    keep_rows: int,
    min_seconds: float,
    max_seconds: float,
    timing_rows: int = 500_000,
    columns: dict[str, Any] | None = None,
) -> Sample:
    """Read with the real job's reader: keep the first `keep_rows` rows as the sample, and go on reading
    (without keeping) until `min_seconds` of steady reading or `timing_rows` rows were timed.

    The wait for the first chunk (opening the file, starting the reader's threads, the first block) is
    timed apart as `startup_seconds`: a job pays it once per file, so it must not set the rate of a large
    file. A large file is never read whole just to time it. When the time is up just after a short chunk (the
    end of a file), one more chunk is read to learn whether the input has ended: a small input on a slow
    machine is then still reported as read whole, at the cost of at most one chunk.
    """
    chunks: list[Chunk] = []
    kept, rows, seconds = 0, 0, 0.0
    first_rows, first_seconds = 0, 0.0
    stream: Iterator[Chunk] = read_inputs(
        files, schema, batch_size, tfrecord_serialized=False, **(columns or {})
    )
    exhausted = False
    peek = False  # the last chunk was short: the next read is cheap and may find the end
    overtime = False  # the time was up once: at most one more read

    def more() -> bool:
        nonlocal overtime
        if seconds >= max_seconds:
            allowed = peek and not overtime
            overtime = True
            return allowed
        if kept < keep_rows:
            return True
        steady = seconds - first_seconds
        return steady < max(min_seconds, first_seconds) and rows < timing_rows

    try:
        while more():
            start = time.perf_counter()
            try:
                chunk = next(stream)
            except StopIteration:
                exhausted = True
                break
            finally:
                seconds += time.perf_counter() - start
            rows += chunk.num_rows
            peek = chunk.num_rows < batch_size
            if not first_rows:
                first_rows, first_seconds = chunk.num_rows, seconds
                # Keep at most ~256 MB of input columns in memory, whatever the row width.
                width = max(1, chunk.batch.nbytes // max(chunk.num_rows, 1))
                keep_rows = min(keep_rows, max(batch_size, MAX_SAMPLE_BYTES // width))
            if kept < keep_rows:
                if kept + chunk.num_rows > keep_rows:  # --rows is a promise: cut the last chunk
                    chunk = Chunk(chunk.batch.slice(0, keep_rows - kept), chunk.file, chunk.first_row)
                chunks.append(chunk)
                kept += chunk.num_rows
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return Sample(files, chunks, kept, rows, seconds, exhausted, first_rows, first_seconds)


def write_sample_file(sample: Sample, directory: Path, fmt: str) -> Path | None:
    """The sample as a file of format fmt, for the pipelined run and the format sweep (None if impossible).

    A CSV or JSON Lines input is copied line for line (so its extra columns and quoting cost what they cost
    in the user's file); other formats are written from the sample's columns.
    """
    first = sample.files[0]
    n = sample.rows
    if fmt == first.format and fmt in ("csv", "jsonl") and len(sample.files) == 1:
        suffix = first.path.name[first.path.name.index(".") :] if "." in first.path.name else f".{fmt}"
        out = directory / f"sample{suffix}"
        opener: Any = gzip.open if first.compression else open
        with opener(first.path, "rb") as src, opener(out, "wb") as dst:
            lines = n + (1 if fmt == "csv" else 0)
            for line in itertools.islice(src, lines):
                dst.write(line)
        return out
    if fmt == first.format == "tfrecord" and len(sample.files) == 1:
        import tensorflow as tf

        compression = "GZIP" if first.compression else ""
        out = directory / ("sample.tfrecord.gz" if first.compression else "sample.tfrecord")
        records = tf.data.TFRecordDataset(str(first.path), compression_type=compression).take(n)
        with tf.io.TFRecordWriter(str(out), options=compression or None) as w:
            for record in records:
                w.write(record.numpy())
        return out
    if fmt not in ("parquet", "csv", "jsonl"):
        return None
    out = directory / f"sample.{fmt}"
    try:
        batches = [c.batch for c in sample.chunks if c.batch.num_rows]
        writer = open_writer(out, batches[0].schema, fmt)  # the job's own writers: lists as JSON in text
        for batch in batches:
            writer.write(batch)
        writer.close()
    except (pa.ArrowException, TfpredictError, ValueError, TypeError, IndexError) as e:
        log.info("cannot write the sample as %s: %s", fmt, e)
        return None
    return out


def read_rate(
    path: Path, schema: dict[str, Any], batch_size: int, columns: dict[str, Any] | None = None
) -> tuple[int, float]:
    """Rows and seconds to read a whole (sample) file with the job's reader."""
    files = expand_inputs([path])
    start = time.perf_counter()
    chunks = read_inputs(files, schema, batch_size, tfrecord_serialized=False, **(columns or {}))
    rows = sum(c.num_rows for c in chunks)
    return rows, time.perf_counter() - start


class Scratch:
    """A temporary directory for sample files and outputs, removed on exit."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="tfpredict-doctor-"))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def input_files(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[InputFile]:
    files = expand_inputs([data] if isinstance(data, (str, os.PathLike)) else list(data))
    if not files:
        raise InputError("no input files given")
    return files

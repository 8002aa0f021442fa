"""Streaming writers (Parquet, CSV, JSON Lines) that write to a temporary file and rename on success.

Model outputs arrive as numpy arrays (one per output, row-aligned); `outputs_to_batch` makes them Arrow
columns: one column per output, multi-valued outputs as list columns, string outputs as UTF-8 text. A
trailing dimension declared as 1 (Estimator's `classes`, `class_ids`, `logistic`, ...) is squeezed, so a
one-value output is a plain column.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import OutputError
from ..features import ARROW_TYPES

log = logging.getLogger(__name__)

OUTPUT_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def output_format(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(format, compression) chosen by the output's extension; Parquet when there is none."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    compression = None
    if suffixes and suffixes[-1] == ".gz":
        compression, suffixes = "gzip", suffixes[:-1]
    if not suffixes:
        if compression:
            raise OutputError(f"{path}: say what to compress (.csv.gz or .jsonl.gz)")
        return "parquet", None
    fmt = OUTPUT_FORMATS.get(suffixes[-1])
    if fmt is None:
        raise OutputError(
            f"{path}: unknown output format '{suffixes[-1]}' "
            "(use .parquet, .csv or .jsonl, optionally .gz for text)"
        )
    if fmt == "parquet" and compression:
        raise OutputError(f"{path}: gzip-compressed Parquet is not supported (Parquet compresses internally)")
    return fmt, compression


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail early (before loading a model) when the output cannot be written."""
    out = Path(path)
    output_format(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: output directory {parent} does not exist")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory; give a file name such as {out / 'predictions.parquet'}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: output directory {parent} is not writable")
    return out


# ---------------------------------------------------------------------------------------------- to Arrow


_ARROW_OF_DTYPE = ARROW_TYPES  # output columns take the same Arrow types as input features


def _static_dims(shape: Any) -> list[int | None] | None:
    """Per-row dims of a signature shape ((None, 2) / [-1, 2] / TensorShape); None for an unknown rank."""
    if shape is None:
        return None
    try:
        dims = list(shape)
    except TypeError:
        return None
    out: list[int | None] = []
    for d in dims[1:]:
        d = getattr(d, "value", d)
        out.append(None if d is None or (isinstance(d, int) and d < 0) else int(d))
    return out


def output_type(dtype: str, shape: Any) -> pa.DataType:
    """Arrow type of one output column from the signature's dtype and shape (batch dim first)."""
    value = _ARROW_OF_DTYPE.get(str(dtype), pa.string() if "string" in str(dtype) else pa.float32())
    dims = _static_dims(shape)
    if dims is None:
        return pa.list_(value)
    dims = _squeezed(dims)
    t = value
    for _ in dims:
        t = pa.list_(t)
    return t


def _squeezed(dims: list[int | None]) -> list[int | None]:
    return [] if dims and all(d == 1 for d in dims) else dims


def column_from_numpy(a: np.ndarray, squeeze: bool = True) -> pa.Array:
    """One output column: (n,) -> scalar column, (n, k, ...) -> (nested) list column; bytes -> UTF-8 text."""
    a = np.asarray(a)
    if squeeze and a.ndim >= 2 and all(d == 1 for d in a.shape[1:]):
        a = a.reshape(a.shape[0])
    flat = a.reshape(-1)
    if flat.dtype == object or flat.dtype.kind in ("S", "U"):
        values = pa.array(flat, pa.binary() if flat.dtype.kind != "U" else pa.string())
        if values.type == pa.binary():
            try:
                values = values.cast(pa.string())
            except pa.ArrowInvalid:
                pass  # not UTF-8: keep bytes
    elif flat.dtype == np.float16:
        values = pa.array(flat.astype(np.float32))
    else:
        values = pa.array(flat)
    # Nest from the innermost dimension out: a (n, 2, 3) output becomes list<list<float>> of n rows.
    for k in range(a.ndim - 1, 0, -1):
        count, width = int(np.prod(a.shape[:k])), a.shape[k]
        offsets = pa.array(np.arange(count + 1, dtype=np.int64) * width, pa.int32())
        values = pa.ListArray.from_arrays(offsets, values)
    return values


def outputs_to_batch(
    outputs: dict[str, np.ndarray], schema: pa.Schema, keep: pa.RecordBatch | None = None
) -> pa.RecordBatch:
    """Row-aligned model outputs (+ --keep columns) as a record batch of the output schema."""
    columns = []
    for f in schema:
        if keep is not None and f.name in keep.schema.names and f.name not in outputs:
            col = keep.column(f.name)
        else:
            col = column_from_numpy(outputs[f.name], squeeze=not _is_list(f.type))
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise OutputError(
                    f"output '{f.name}': the model returned {col.type}, "
                    f"not the {f.type} its signature declares"
                ) from None
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------------------------------------- JSON text


def _escape(strings: pa.Array) -> pa.Array:
    s = pc.replace_substring(strings, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    for raw, esc in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f")):
        s = pc.replace_substring(s, raw, esc)
    if pc.any(pc.match_substring_regex(s, "[\\x00-\\x1f]")).as_py():
        s = pa.array([None if v is None else json.dumps(v)[1:-1] for v in strings.to_pylist()], pa.string())
    return s


def json_text(col: pa.Array) -> pa.Array:
    """Each value of a column as JSON text (vectorized): 0.5 -> "0.5", "a" -> "\"a\"", [1, 2] -> "[1, 2]"."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if not pa.types.is_list(t):
            col = col.cast(pa.list_(t.value_type))
        inner = json_text(col.values)
        rebuilt = pa.ListArray.from_arrays(col.offsets, inner)
        joined = pc.binary_join_element_wise("[", pc.binary_join(rebuilt, ", "), "]", "")
        out = joined
    elif pa.types.is_floating(t):
        text = col.cast(pa.string())
        out = pc.if_else(pc.is_finite(col), text, pa.scalar("null"))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        out = col.cast(pa.string())
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        out = pc.binary_join_element_wise('"', _escape(col.cast(pa.string())), '"', "")
    elif pa.types.is_binary(t):
        out = json_text(
            pa.array([None if v is None else v.decode("utf-8", "replace") for v in col.to_pylist()])
        )
    elif pa.types.is_null(t):
        out = pa.array(["null"] * len(col), pa.string())
    else:
        out = pa.array([json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
    return pc.fill_null(out, "null")


def _concat_buffer(strings: pa.Array) -> memoryview:
    """The bytes of all values of a string array, back to back (zero-copy)."""
    strings = pa.concat_arrays([strings]) if strings.offset else strings
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32, count=len(strings) + 1)
    data = strings.buffers()[2]
    if data is None:
        return memoryview(b"")
    return memoryview(data)[offsets[0] : offsets[-1]]


# ---------------------------------------------------------------------------------------------- writers


class ParquetTableWriter:
    """Appends record batches to a Parquet file (row group per ~`row_group_rows` rows)."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int = 256 * 1024) -> None:
        # Dictionary encoding only for text columns (class names repeat): on float columns it costs 3x the
        # write time for a larger file (measured on bench_dnn outputs).
        text = [f.name for f in schema if _is_text(f.type)]
        self._writer = pq.ParquetWriter(str(path), schema, compression="snappy", use_dictionary=text)
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._row_group_rows = row_group_rows

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending), row_group_size=max(self._rows, 1))
        self._pending, self._rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


class CsvTableWriter:
    """Appends record batches to a CSV file; list columns become JSON lists ("[0.1, 0.9]")."""

    def __init__(self, path: Path, schema: pa.Schema, compression: str | None = None) -> None:
        self._sink = pa.output_stream(str(path), compression=compression)
        self._text_schema = pa.schema(
            [pa.field(f.name, pa.string()) if _is_list(f.type) else f for f in schema]
        )
        self._writer = pacsv.CSVWriter(self._sink, self._text_schema)

    def write(self, batch: pa.RecordBatch) -> None:
        columns = [json_text(c) if _is_list(c.type) else c for c in batch.columns]
        self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._text_schema))

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


class JsonlTableWriter:
    """Appends record batches to a JSON Lines file, one object per row, built with Arrow compute."""

    def __init__(self, path: Path, schema: pa.Schema, compression: str | None = None) -> None:
        self._sink = pa.output_stream(str(path), compression=compression)
        self._keys = [json.dumps(f.name) for f in schema]

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        parts: list[Any] = []
        for i, (key, col) in enumerate(zip(self._keys, batch.columns, strict=True)):
            parts.append(("{" if i == 0 else ", ") + key + ": ")
            parts.append(json_text(col))
        parts.append("}\n")
        lines = pc.binary_join_element_wise(*parts, "")
        self._sink.write(_concat_buffer(lines))

    def close(self) -> None:
        self._sink.close()


def _is_text(t: pa.DataType) -> bool:
    while _is_list(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


TableWriter = ParquetTableWriter | CsvTableWriter | JsonlTableWriter


def open_writer(
    path: Path, schema: pa.Schema, fmt: str | None = None, compression: str | None = None
) -> TableWriter:
    """A writer for `path` in the format its name says (or `fmt`)."""
    if fmt is None:
        fmt, compression = output_format(path)
    try:
        if fmt == "parquet":
            return ParquetTableWriter(path, schema)
        if fmt == "csv":
            return CsvTableWriter(path, schema, compression)
        return JsonlTableWriter(path, schema, compression)
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e}") from None


@contextlib.contextmanager
def write_atomically(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` on success, remove it on any failure.

    The temporary file lives in the target directory, so the rename is atomic and a reader of `path` never
    sees a half-written file (after Ctrl-C, a crash or bad input there is no file at `path` at all).
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OutputError(f"{target}: cannot create a file in {parent}: {e.strerror}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the output should get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class BadRowsWriter:
    """Rejected rows with the reason, as JSON Lines (CSV when the name ends in .csv), written as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._csv = path.suffix.lower() == ".csv"
        try:
            self._f = open(path, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise OutputError(f"{path}: cannot write bad rows: {e.strerror}") from None
        if self._csv:
            import csv

            self._w = csv.writer(self._f)
            self._w.writerow(["file", "row", "line", "reason", "values"])

    def write(self, rows: Sequence[Any]) -> None:
        for r in rows:
            values = {k: _plain(v) for k, v in r.values.items()}
            if self._csv:
                self._w.writerow([r.file, r.row, r.line or "", r.reason, json.dumps(values, default=str)])
            else:
                record = {"file": r.file, "row": r.row, "line": r.line, "reason": r.reason, "values": values}
                self._f.write(json.dumps(record, default=str) + "\n")
            self.count += 1

    def close(self) -> None:
        self._f.close()


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


__all__ = [
    "BadRowsWriter",
    "CsvTableWriter",
    "JsonlTableWriter",
    "ParquetTableWriter",
    "check_output_path",
    "column_from_numpy",
    "json_text",
    "open_writer",
    "output_format",
    "output_type",
    "outputs_to_batch",
    "write_atomically",
]

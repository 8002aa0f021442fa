"""Streaming record-batch readers: CSV, Parquet, JSON Lines, TFRecord files -> Arrow batches in model types.

Every reader yields `Chunk`s of at most `batch_size` rows and never holds a whole file. Column types follow
the model's feature schema, not the reader's guess: a column of digits stays a string for a string feature,
an int column feeds a float feature, and a multi-valued numeric feature is read as text (its CSV cells are
JSON lists such as "[0.5, 1.25]"; the core's converter parses them).
"""

from __future__ import annotations

import csv
import glob
import gzip
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..errors import InputError
from ..features import AllowMissing, FeatureSpec, missing_columns, missing_message

log = logging.getLogger(__name__)

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


@dataclass
class BadRow:
    """A rejected input row: where it came from, why, and its values as text (for --bad-rows)."""

    file: str
    row: int  # 1-based data row (record) number within the file
    line: int | None  # 1-based line number for text formats, else None
    reason: str
    values: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return f"{self.file}, line {self.line}" if self.line is not None else f"{self.file}, row {self.row}"


@dataclass
class Chunk:
    """A slice of one input file: feature columns in model types, plus where it starts (for messages).

    For TFRecord inputs fed straight to an Example-parsing signature, `serialized` holds the records and
    `batch` only the --keep columns.
    """

    batch: pa.RecordBatch
    file: InputFile
    first_row: int  # 0-based index of the first row of this chunk within its file
    serialized: np.ndarray | None = None
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(self.serialized) if self.serialized is not None else self.batch.num_rows

    def line_of(self, i: int) -> int | None:
        """1-based line number of row i of this chunk (the CSV header is line 1); None for binary formats."""
        n = self.first_row + i + 1
        if self.file.format == "csv":
            return n + 1
        if self.file.format == "jsonl":
            return n
        return None

    def where(self, i: int) -> str:
        line = self.line_of(i)
        if line is not None:
            return f"{self.file}, line {line}"
        return (
            f"{self.file}, {'record' if self.file.format == 'tfrecord' else 'row'} {self.first_row + i + 1}"
        )


# ---------------------------------------------------------------------------------------------- finding files


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


# ---------------------------------------------------------------------------------------------- types


_NUMERIC = {
    "float16": pa.float32(),
    "bfloat16": pa.float32(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int8": pa.int64(),
    "int16": pa.int64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.int64(),
    "uint16": pa.int64(),
    "uint32": pa.int64(),
    "uint64": pa.uint64(),
    "bool": pa.bool_(),
}


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _scalar(spec: FeatureSpec) -> bool:
    return spec.kind != "varlen" and all(d == 1 for d in spec.shape)


def value_type(spec: FeatureSpec) -> pa.DataType:
    """The Arrow type of one value of a feature ("string" -> string, "float32" -> float32, ...)."""
    if spec.dtype == "string":
        return pa.string()
    return _NUMERIC.get(spec.dtype, pa.float32())


def column_type(spec: FeatureSpec, fmt: str) -> pa.DataType | None:
    """The Arrow type to read a feature's column as in a file of format fmt (None: leave as found).

    Scalar features get their own type. Multi-valued ones are text in CSV (JSON lists, parsed by the core)
    and lists elsewhere, nested as deep as the feature's shape (float32[3,3]: a list of lists of floats).
    """
    if _scalar(spec):
        return value_type(spec)
    if fmt == "csv":
        return pa.string()
    t = value_type(spec)
    for _ in range(1 if spec.kind == "varlen" else max(1, len(spec.shape))):
        t = pa.list_(t)
    return t


def _list_depth(t: pa.DataType) -> int:
    depth = 0
    while _is_list(t):
        depth, t = depth + 1, t.value_type
    return depth


def check_columns(
    file: InputFile,
    names: Sequence[str],
    schema: dict[str, FeatureSpec],
    keep: Sequence[str] = (),
    allow_missing: AllowMissing = (),
    assembled: dict[str, list[str]] | None = None,
) -> None:
    """Every column the model reads is in the file (unless allowed to be absent), and every --keep column."""
    missing = missing_columns(names, schema, allow_missing)
    if missing:
        raise InputError(f"{file}: {missing_message(missing, schema, list(names), assembled)}")
    present = set(names)
    for name in keep:
        if name not in present:
            raise InputError(
                f"{file}: --keep column '{name}' is not in the input; columns found: {', '.join(names)}"
            )


# ---------------------------------------------------------------------------------------------- rebatching


def rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of record batches into batches of exactly `size` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        have += batch.num_rows
        while have >= size:
            joined = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            yield joined.slice(0, size)
            rest = joined.slice(size)
            pending = [rest] if rest.num_rows else []
            have = rest.num_rows
    if have:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


# ---------------------------------------------------------------------------------------------- CSV


_FLOAT_TEXT = re.compile(
    r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)\s*$", re.I
)
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_TYPE_WORDS = {"float": "a number", "double": "a number", "int64": "an integer", "int32": "an integer"}


def _expected(t: pa.DataType) -> str:
    return _TYPE_WORDS.get(str(t), str(t))


def _bad_text_mask(values: pa.Array, target: pa.DataType) -> np.ndarray:
    """Rows of a text column that cannot be cast to a numeric target (nulls are not bad here)."""
    pattern = _INT_TEXT.pattern if pa.types.is_integer(target) else _FLOAT_TEXT.pattern
    ok = pc.match_substring_regex(values, pattern, ignore_case=True)
    bad = pc.and_(pc.is_valid(values), pc.invert(ok))
    return np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)


def _cast_text(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast a text column to target; unparsable cells become null and are reported in the returned mask.

    For an integer target, an integral float ("180.0", "180.") is that integer, exactly: the zeros are cut
    off the text, never rounded through a float (ids beyond 2**53 stay exact)."""
    try:
        return pc.cast(pc.utf8_trim_whitespace(values), target), np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if pa.types.is_integer(target):
            values = pc.replace_substring_regex(
                pc.utf8_trim_whitespace(values), pattern=r"^([+-]?\d+)\.0*$", replacement=r"\1"
            )
            try:
                return pc.cast(values, target), np.zeros(len(values), dtype=bool)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        bad = _bad_text_mask(values, target)
        cleaned = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), values)
        try:
            return pc.cast(pc.utf8_trim_whitespace(cleaned), target), bad
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # The regex and Arrow's parser disagree on some cell: settle it one value at a time (rare path).
            out, bad = [], np.zeros(len(values), dtype=bool)
            for i, v in enumerate(values.to_pylist()):
                try:
                    out.append(None if v is None else pc.cast(pa.scalar(v.strip()), target).as_py())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    out.append(None)
                    bad[i] = True
            return pa.array(out, target), bad


def _restartable(
    open_batches: Callable[[], Iterator[pa.RecordBatch]], retry: Callable[[pa.ArrowInvalid], bool]
) -> Iterator[pa.RecordBatch]:
    """The batches of a reader that is opened again, with other column types, when `retry` says a read
    error is one a second pass fixes (and adjusts the types): rows already yielded are not yielded twice."""
    done = 0
    while True:
        skip = done
        try:
            for batch in open_batches():
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                if skip:
                    batch, skip = batch.slice(skip), 0
                done += batch.num_rows
                yield batch
            return
        except pa.ArrowInvalid as e:
            if not retry(e):
                raise
            log.debug("reading again from row %d with other column types: %s", done, e)


def _ints_from_text(
    file: InputFile, batch: pa.RecordBatch, columns: set[str], types: dict[str, pa.DataType], first_row: int
) -> pa.RecordBatch:
    """Text columns of integer features -> integers ("180" and "180.0" read 180); "180.5" names its line."""
    arrays = list(batch.columns)
    for name in columns:
        i = batch.schema.get_field_index(name)
        values, bad = _cast_text(arrays[i], types[name])
        if bad.any():
            j = int(np.argmax(bad))
            raise InputError(
                f"{file}, line {first_row + j + 2}, column '{name}': "
                f"expected {_expected(types[name])}, found {arrays[i][j].as_py()!r}"
            )
        arrays[i] = values
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _read_header(file: InputFile, delimiter: str) -> list[str]:
    opener = gzip.open if file.compression == "gzip" else open
    try:
        with opener(file.path, "rt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
            line = f.readline()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(f"{file}: cannot read CSV header: {e}") from None
    if not line.strip():
        raise InputError(f"{file}: empty file (a CSV input needs at least a header line)")
    return next(csv.reader([line], delimiter=delimiter))


def _raise_conversion_error(
    file: InputFile,
    message: str,
    names: list[str],
    types: dict[str, pa.DataType],
    delimiter: str,
) -> None:
    """Arrow's "In CSV column #3: CSV conversion error to float: invalid value 'x'" -> a line number."""
    m = re.search(r"column #(\d+)", message)
    if not m or int(m.group(1)) >= len(names):
        raise InputError(f"{file}: {message}")
    column = names[int(m.group(1))]
    target = types.get(column)
    if target is None:
        raise InputError(f"{file}: column '{column}': {message}")
    # Re-read that one column as text and find the first cell that does not convert.
    reader = pacsv.open_csv(
        str(file.path),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(column_types={column: pa.string()}, include_columns=[column]),
    )
    row = 0
    for batch in reader:
        _, bad = _cast_text(batch.column(0), target)
        if bad.any():
            i = int(np.argmax(bad))
            value = batch.column(0)[i].as_py()
            raise InputError(
                f"{file}, line {row + i + 2}, column '{column}': "
                f"expected {_expected(target)}, found {value!r}"
            )
        row += batch.num_rows
    raise InputError(f"{file}: column '{column}': {message}")


def read_csv(
    file: InputFile,
    schema: dict[str, FeatureSpec],
    batch_size: int,
    keep: Sequence[str] = (),
    *,
    lenient: bool = False,
    block_size: int = 4 << 20,
    allow_missing: AllowMissing = (),
    assembled: dict[str, list[str]] | None = None,
) -> Iterator[Chunk]:
    """Stream a CSV (or .csv.gz) file with Arrow's multi-threaded reader, typed by the model schema.

    lenient (for --bad-rows): malformed lines and unparsable numbers become `BadRow`s instead of errors.
    An integer column holding "180.0" is read again as text from that point on and converted exactly.
    """
    delimiter = "\t" if file.path.name.lower().split(".")[-2 if file.compression else -1] == "tsv" else ","
    names = _read_header(file, delimiter)
    check_columns(file, names, schema, keep, allow_missing, assembled)
    wanted = [n for n in names if n in schema or n in keep]
    wanted = list(dict.fromkeys(wanted))
    types: dict[str, pa.DataType] = {}
    for name in wanted:
        if name in schema:
            t = column_type(schema[name], "csv")
            if t is not None:
                types[name] = t
        else:
            types[name] = pa.string()  # --keep ids pass through as written (no type guessing across blocks)
    read_types = {n: (pa.string() if lenient and not pa.types.is_string(t) else t) for n, t in types.items()}
    # Integer columns found to hold integral floats ("180.0", as pandas and TFX write them): read as text.
    int_text: set[str] = set()

    invalid: list[Any] = []

    def on_invalid(row: Any) -> str:
        invalid.append(row)
        return "skip" if lenient else "error"

    def open_reader() -> Any:
        return pacsv.open_csv(
            str(file.path),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={**read_types, **{n: pa.string() for n in int_text}},
                include_columns=wanted,
                # Only an empty cell is a missing value (the feature is absent from the row), also for
                # text; "NA" or "null" are values (a country code, a category), not Arrow's null guesses.
                null_values=[""],
                strings_can_be_null=True,
            ),
        )

    def retry_as_text(e: pa.ArrowInvalid) -> bool:
        """After "conversion error to int64" in an integer column: read that column as text (True)."""
        m = re.search(r"column #(\d+): CSV conversion error to u?int", str(e))
        column = names[int(m.group(1))] if m and int(m.group(1)) < len(names) else None
        if column is None or column in int_text or invalid or not pa.types.is_integer(types[column]):
            return False
        int_text.add(column)
        return True

    def raw_batches() -> Iterator[pa.RecordBatch]:
        try:
            reader = open_reader()
        except OSError as e:
            raise InputError(f"{file}: cannot read: {e}") from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except OSError as e:
                raise InputError(f"{file}: cannot read: {e}") from None
            yield batch

    def batches() -> Iterator[pa.RecordBatch]:
        row = 0
        try:
            for batch in _restartable(raw_batches, retry_as_text):
                if int_text:
                    batch = _ints_from_text(file, batch, int_text, types, row)
                row += batch.num_rows
                yield batch
        except pa.ArrowInvalid as e:
            _raise_csv_error(file, str(e), names, types, delimiter, invalid)

    row = 0
    for batch in rebatch(batches(), batch_size):
        chunk = Chunk(batch, file, row)
        if lenient:
            chunk = _convert_lenient(chunk, types)
            # Lines Arrow skipped as malformed: report them with this chunk (their numbers are approximate
            # only when the file has quoted newlines).
            while invalid:
                inv = invalid.pop(0)
                number = getattr(inv, "number", None)
                chunk.bad_rows.append(
                    BadRow(
                        str(file),
                        row=0,
                        line=number,
                        reason=f"expected {inv.expected_columns} columns, found {inv.actual_columns}",
                        values={"text": inv.text},
                    )
                )
        row += batch.num_rows
        yield chunk


def _raise_csv_error(
    file: InputFile,
    message: str,
    names: list[str],
    types: dict[str, pa.DataType],
    delimiter: str,
    invalid: list[Any],
) -> None:
    if invalid:
        inv = invalid[0]
        line = f", line {inv.number}" if getattr(inv, "number", None) else ""
        raise InputError(
            f"{file}{line}: expected {inv.expected_columns} columns, found {inv.actual_columns}: "
            f"{inv.text[:80]!r}"
        )
    if "conversion error" in message:
        _raise_conversion_error(file, message, names, types, delimiter)
    raise InputError(f"{file}: {message.splitlines()[0]}")


def _convert_lenient(chunk: Chunk, types: dict[str, pa.DataType]) -> Chunk:
    """Cast the text-read numeric columns of a chunk; rows with unparsable cells move to bad_rows."""
    batch = chunk.batch
    bad_any = np.zeros(batch.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    columns = []
    for name in batch.schema.names:
        col = batch.column(name)
        target = types.get(name)
        if target is not None and not pa.types.is_string(target) and pa.types.is_string(col.type):
            col, bad = _cast_text(col, target)
            for i in np.flatnonzero(bad & ~bad_any):
                reasons[int(i)] = (
                    f"column '{name}': expected {_expected(target)}, "
                    f"found {batch.column(name)[int(i)].as_py()!r}"
                )
            bad_any |= bad
        columns.append(col)
    batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    return split_bad_rows(
        Chunk(batch, chunk.file, chunk.first_row, bad_rows=chunk.bad_rows), bad_any, reasons
    )


def split_bad_rows(chunk: Chunk, bad: np.ndarray, reasons: dict[int, str]) -> Chunk:
    """Drop the rows flagged in `bad` from a chunk, recording them (with their reason) in chunk.bad_rows.

    The chunk keeps its first_row, so row numbers of later rows are only exact for the rows before the
    first dropped one; good rows keep their values and their order.
    """
    if not bad.any():
        return chunk
    original = chunk.batch
    for index in np.flatnonzero(bad):
        i = int(index)
        values = dict(original.slice(i, 1).to_pylist()[0])
        chunk.bad_rows.append(
            BadRow(
                str(chunk.file), chunk.first_row + i + 1, chunk.line_of(i), reasons.get(i, "rejected"), values
            )
        )
    keep = pa.array(~bad)
    out = Chunk(original.filter(keep), chunk.file, chunk.first_row, bad_rows=chunk.bad_rows)
    out.serialized = None if chunk.serialized is None else chunk.serialized[~bad]
    return out


# ---------------------------------------------------------------------------------------------- Parquet


def read_parquet(
    file: InputFile,
    schema: dict[str, FeatureSpec],
    batch_size: int,
    keep: Sequence[str] = (),
    *,
    allow_missing: AllowMissing = (),
    assembled: dict[str, list[str]] | None = None,
) -> Iterator[Chunk]:
    """Stream a Parquet file batch by batch, reading only the model's columns and --keep columns."""
    try:
        pf = pq.ParquetFile(str(file.path))
        names = pf.schema_arrow.names
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{file}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    check_columns(file, names, schema, keep, allow_missing, assembled)
    wanted = list(dict.fromkeys(n for n in names if n in schema or n in keep))
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size, columns=wanted, use_threads=True):
            batch = _cast_to_schema(file, batch, schema, row)
            yield Chunk(batch, file, row)
            row += batch.num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{file}: corrupt Parquet data after row {row} ({str(e).splitlines()[0]})") from None


def read_parquet_rows(file: InputFile) -> int | None:
    try:
        return pq.ParquetFile(str(file.path)).metadata.num_rows
    except Exception:  # noqa: BLE001 - only a progress estimate
        return None


def _cast_to_schema(
    file: InputFile, batch: pa.RecordBatch, schema: dict[str, FeatureSpec], first_row: int
) -> pa.RecordBatch:
    """Cast feature columns to the model's types (int -> float, large_string -> string, ...)."""
    columns, changed = [], False
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        spec = schema.get(name)
        target = column_type(spec, file.format) if spec is not None else None
        if target is not None and col.type != target:
            if pa.types.is_string(target) and not (
                pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            ):
                pass  # a non-text column for a string feature: the core names it clearly
            elif pa.types.is_list(target) and _list_depth(col.type) != _list_depth(target):
                pass  # one value per row, JSON-list text, flat lists for a [3,3] feature: the core reads them
            elif pa.types.is_integer(target) and pa.types.is_floating(col.type):
                col, first_bad = floats_to_ints(col, target)
                if first_bad is not None:
                    raise InputError(
                        f"{file}, row {first_row + first_bad + 1}, column '{name}': "
                        f"expected {_expected(target)}, found {col[first_bad].as_py()!r}"
                    )
                changed = True
            else:
                try:
                    col = pc.cast(col, target)
                    changed = True
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    if pa.types.is_string(col.type) and not _is_list(target):
                        _, bad = _cast_text(col, target)
                        if bad.any():
                            i = int(np.argmax(bad))
                            raise InputError(
                                f"{file}, row {first_row + i + 1}, column '{name}': "
                                f"expected {_expected(target)}, found {col[i].as_py()!r}"
                            ) from None
                    raise InputError(
                        f"{file}, rows {first_row + 1}-{first_row + batch.num_rows}, column '{name}': "
                        f"expected {_expected(target)}, found {col.type} values that do not convert "
                        f"({str(e).splitlines()[0]})"
                    ) from None
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names) if changed else batch


def floats_to_ints(
    col: pa.Array, target: pa.DataType, exact_below: float = 2.0**63
) -> tuple[pa.Array, int | None]:
    """A float column of an integer feature -> integers when every value is a whole number (180.0 is 180;
    NaN, as pandas writes a gap, is missing); else the column unchanged and the index of the first value
    that is not a whole number, or not below exact_below in magnitude (a float no longer holds every
    integer beyond 2**53, so a value parsed from text as a float may already be rounded)."""
    x = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)  # nulls -> NaN
    gap = np.isnan(x)
    with np.errstate(invalid="ignore"):
        bad = ~gap & ((x != np.trunc(x)) | (np.abs(x) >= exact_below))
    if bad.any():
        return col, int(np.argmax(bad))
    ints = pa.array(np.where(gap, 0, x).astype(np.int64), mask=gap if gap.any() else None)
    return pc.cast(ints, target), None


# ---------------------------------------------------------------------------------------------- JSON Lines


def read_jsonl(
    file: InputFile,
    schema: dict[str, FeatureSpec],
    batch_size: int,
    keep: Sequence[str] = (),
    *,
    block_size: int = 4 << 20,
    allow_missing: AllowMissing = (),
    assembled: dict[str, list[str]] | None = None,
) -> Iterator[Chunk]:
    """Stream a JSON Lines file with Arrow's block-wise JSON reader (bounded memory), typed by the schema.

    Fixed-shape features get the model's type (nested lists for a [3,3] input); var-len ones are left to the
    reader (a categorical feature may come as "red" or ["red", "blue"]) and the core converts either. When
    an integer feature holds 180.0, the file is read again with integer features as floats, checked whole.
    """
    typed = {n: column_type(s, "jsonl") for n, s in schema.items() if s.kind != "varlen"}
    as_floats: set[str] = set()  # integer features read as float64 (the file writes 180.0 for 180)
    infer = bool(keep) or any(s.kind == "varlen" for s in schema.values())

    def open_reader() -> Any:
        fields = [
            pa.field(n, pa.float64() if n in as_floats else t) for n, t in typed.items() if t is not None
        ]
        stream = pa.input_stream(str(file.path), compression="gzip" if file.compression else None)
        return pajson.open_json(
            stream,
            read_options=pajson.ReadOptions(use_threads=True, block_size=block_size),
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema(fields),
                unexpected_field_behavior="infer" if infer else "ignore",
            ),
        )

    def retry_as_floats(e: pa.ArrowInvalid) -> bool:
        # "Failed to convert JSON to int64, couldn't parse:180.0" names no column: all integer features.
        ints = {n for n, t in typed.items() if t is not None and pa.types.is_integer(t)}
        if as_floats or not ints or not re.search(r"to u?int\d+, couldn't parse:\s*-?[\d.eE+]+$", str(e)):
            return False
        as_floats.update(ints)
        return True

    def raw_batches() -> Iterator[pa.RecordBatch]:
        try:
            reader = open_reader()
        except pa.ArrowInvalid as e:
            if "Empty JSON file" in str(e) or "empty" in str(e).lower():
                return
            raise
        except OSError as e:
            raise InputError(f"{file}: cannot read: {e}") from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield batch

    def batches() -> Iterator[pa.RecordBatch]:
        seen = 0
        try:
            for batch in _restartable(raw_batches, retry_as_floats):
                if seen == 0:
                    # A JSON line may omit a key; a column absent from every line of the first block (Arrow's
                    # read unit, megabytes: not the --batch-size slice) is missing.
                    names = batch.schema.names
                    present = [
                        n for n in names if n not in schema or batch.column(n).null_count < batch.num_rows
                    ]
                    check_columns(file, present, schema, keep, allow_missing, assembled)
                if as_floats:
                    batch = _ints_from_floats(file, batch, as_floats, typed, seen)
                seen += batch.num_rows
                yield batch
        except pa.ArrowInvalid as e:
            raise InputError(_json_error(file, str(e), seen, schema)) from None

    row = 0
    for batch in rebatch(batches(), batch_size):
        wanted = [n for n in batch.schema.names if n in schema or n in keep]
        batch = batch.select(wanted)
        yield Chunk(batch, file, row)
        row += batch.num_rows


def _ints_from_floats(
    file: InputFile, batch: pa.RecordBatch, columns: set[str], types: dict[str, Any], first_row: int
) -> pa.RecordBatch:
    arrays = list(batch.columns)
    for name in columns:
        i = batch.schema.get_field_index(name)
        if i < 0:
            continue
        values, bad = floats_to_ints(arrays[i], types[name], exact_below=2.0**53)
        if bad is not None:
            value = arrays[i][bad].as_py()
            why = " (too large for a float to hold exactly)" if abs(value) >= 2.0**53 else ""
            raise InputError(
                f"{file}, line {first_row + bad + 1}, column '{name}': "
                f"expected {_expected(types[name])}, found {value!r}{why}"
            )
        arrays[i] = values
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _json_error(file: InputFile, message: str, row: int, schema: dict[str, FeatureSpec]) -> str:
    """Arrow names the block, not the line: find the first offending line from `row` on (error path only)."""
    first = message.splitlines()[0]
    found = _first_bad_json_line(file, row, schema)
    if found is not None:
        return found
    m = re.search(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)", first)
    if m:
        return f"{file}, after line {row}, column '{m.group(1)}': expected {m.group(2)}, found {m.group(3)}"
    return f"{file}: not valid JSON Lines after line {row} ({first})"


def _first_bad_json_line(file: InputFile, start: int, schema: dict[str, FeatureSpec]) -> str | None:
    import json

    opener = gzip.open if file.compression else open
    scalar = {n: s for n, s in schema.items() if _scalar(s)}
    with opener(file.path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for number, line in enumerate(fh, 1):
            if number <= start or not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                return f"{file}, line {number}: not valid JSON ({e})"
            if not isinstance(record, dict):
                return f"{file}, line {number}: expected a JSON object, found {type(record).__name__}"
            for name, spec in scalar.items():
                value = record.get(name)
                if value is None:
                    continue
                if spec.dtype == "string":
                    ok = isinstance(value, str)
                else:
                    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if not ok:
                    expected = "a string" if spec.dtype == "string" else "a number"
                    return f"{file}, line {number}, column '{name}': expected {expected}, found {value!r}"
    return None


# ---------------------------------------------------------------------------------------------- TFRecord


def _example_keep_types(file: InputFile, keep: Sequence[str]) -> dict[str, Any]:
    """The tf.io parse spec of --keep columns, learned from the first record of the file."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(file.path), compression_type="GZIP" if file.compression else "")
    first = next(iter(ds.take(1)), None)
    if first is None:
        return {}
    example = tf.train.Example.FromString(first.numpy())
    spec = {}
    for name in keep:
        if name not in example.features.feature:
            raise InputError(f"{file}: --keep feature '{name}' is not in the tf.Example records")
        kind = example.features.feature[name].WhichOneof("kind")
        dtype = {"bytes_list": tf.string, "int64_list": tf.int64, "float_list": tf.float32}.get(
            kind, tf.string
        )
        spec[name] = tf.io.FixedLenFeature([], dtype)
    return spec


def parse_spec(schema: dict[str, FeatureSpec]) -> dict[str, Any]:
    """tf.io parse spec of a feature schema (for TFRecord inputs to a model that does not parse Examples)."""
    import tensorflow as tf

    spec: dict[str, Any] = {}
    for name, f in schema.items():
        dtype = tf.as_dtype(f.dtype)
        if f.kind == "varlen" or any(d is None for d in f.shape):
            spec[name] = tf.io.RaggedFeature(dtype)
        else:
            spec[name] = tf.io.FixedLenFeature(list(f.shape), dtype, default_value=f.default)
    return spec


def _tensor_to_arrow(t: Any) -> pa.Array:
    import tensorflow as tf

    if isinstance(t, tf.RaggedTensor):
        values = _tensor_to_arrow(t.flat_values)
        return pa.ListArray.from_arrays(pa.array(t.row_splits.numpy().astype(np.int32)), values)
    a = t.numpy()
    if a.dtype == object:
        flat = pa.array([v.decode("utf-8", "replace") for v in a.reshape(-1)], pa.string())
    else:
        flat = pa.array(a.reshape(-1))
    if a.ndim <= 1 or (a.ndim == 2 and a.shape[1] == 1):
        return flat
    width = int(np.prod(a.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(flat, width).cast(pa.list_(flat.type))


def read_tfrecord(
    file: InputFile,
    schema: dict[str, FeatureSpec],
    batch_size: int,
    keep: Sequence[str] = (),
    *,
    serialized: bool = True,
) -> Iterator[Chunk]:
    """Stream a TFRecord file of serialized tf.Example (gzip too).

    serialized=True: chunks carry the raw records, for a signature that parses Examples itself (the cheapest
    path: no decode on our side). Otherwise the records are parsed with the model's parse spec into columns.
    --keep columns are parsed either way.
    """
    import tensorflow as tf

    keep_spec = _example_keep_types(file, keep) if keep else {}
    spec = {} if serialized else parse_spec(schema)
    ds = tf.data.TFRecordDataset(
        str(file.path), compression_type="GZIP" if file.compression else "", buffer_size=8 << 20
    ).batch(batch_size)
    full_spec = {**spec, **keep_spec}
    row = 0
    it = iter(ds)
    while True:
        try:
            records = next(it)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.OpError) as e:
            raise InputError(f"{file}: corrupt TFRecord data after record {row} ({e.message})") from None
        arrays: dict[str, pa.Array] = {}
        if full_spec:
            try:
                parsed = tf.io.parse_example(records, full_spec)
            except tf.errors.InvalidArgumentError as e:
                raise InputError(
                    f"{file}, records {row + 1}-{row + int(records.shape[0])}: {e.message.splitlines()[0]}"
                ) from None
            arrays = {n: _tensor_to_arrow(parsed[n]) for n in full_spec}
        n = int(records.shape[0])
        batch = pa.RecordBatch.from_pydict(arrays) if arrays else pa.RecordBatch.from_pydict({})
        if not arrays:
            batch = pa.record_batch([pa.nulls(n)], names=["__rows__"]).select([])
        yield Chunk(batch, file, row, serialized=records.numpy() if serialized else None)
        row += n


# ---------------------------------------------------------------------------------------------- all inputs


def input_columns(file: InputFile) -> list[str]:
    """A file's column names in file order (for a column range such as --assemble features=f0:f63): the CSV
    header, the Parquet schema, the keys of the first JSON line, the features of the first tf.Example."""
    if file.format == "csv":
        delimiter = "\t" if _is_tsv_name(file) else ","
        return _read_header(file, delimiter)
    if file.format == "parquet":
        try:
            return list(pq.read_schema(str(file.path)).names)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{file}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    if file.format == "jsonl":
        import json

        opener = gzip.open if file.compression else open
        with opener(file.path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError as e:
                        raise InputError(f"{file}, line {number}: not valid JSON ({e})") from None
                    return [str(k) for k in record] if isinstance(record, dict) else []
        return []
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(file.path), compression_type="GZIP" if file.compression else "")
    first = next(iter(ds.take(1)), None)
    if first is None:
        return []
    return sorted(tf.train.Example.FromString(first.numpy()).features.feature)


def _is_tsv_name(file: InputFile) -> bool:
    return file.path.name.lower().split(".")[-2 if file.compression else -1] == "tsv"


def read_inputs(
    files: Sequence[InputFile],
    schema: dict[str, FeatureSpec],
    batch_size: int,
    keep: Sequence[str] = (),
    *,
    lenient: bool = False,
    tfrecord_serialized: bool = True,
    allow_missing: AllowMissing = (),
    assembled: dict[str, list[str]] | None = None,
) -> Iterator[Chunk]:
    """All input files in order, as one stream of chunks.

    schema: the columns to read (the model's features, assembled inputs replaced by their source columns:
    features.source_schema). A file without one of them fails, unless allow_missing names it (or is True).
    """
    columns: dict[str, Any] = {"allow_missing": allow_missing, "assembled": assembled}
    for file in files:
        if file.format == "csv":
            yield from read_csv(file, schema, batch_size, keep, lenient=lenient, **columns)
        elif file.format == "parquet":
            yield from read_parquet(file, schema, batch_size, keep, **columns)
        elif file.format == "jsonl":
            yield from read_jsonl(file, schema, batch_size, keep, **columns)
        elif file.format == "tfrecord":
            yield from read_tfrecord(file, schema, batch_size, keep, serialized=tfrecord_serialized)
        else:  # pragma: no cover - detect_format only returns the above
            raise InputError(f"{file}: unsupported format {file.format}")


def estimate_rows(files: Sequence[InputFile], sample_bytes: int = 1 << 20) -> int | None:
    """Total input rows for a progress bar's ETA: exact for Parquet, estimated for uncompressed text files
    from the lines in their first MB; None when a file gives no cheap estimate (gzip, TFRecord)."""
    total = 0
    for f in files:
        if f.format == "parquet":
            n = read_parquet_rows(f)
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


def input_bytes(files: Sequence[InputFile]) -> int:
    return sum(f.path.stat().st_size for f in files)


__all__ = [
    "BadRow",
    "Chunk",
    "InputFile",
    "column_type",
    "detect_format",
    "estimate_rows",
    "expand_inputs",
    "check_columns",
    "floats_to_ints",
    "input_bytes",
    "input_columns",
    "parse_spec",
    "read_csv",
    "read_inputs",
    "read_jsonl",
    "read_parquet",
    "read_tfrecord",
    "rebatch",
    "split_bad_rows",
    "value_type",
]

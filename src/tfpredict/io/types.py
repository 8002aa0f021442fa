"""Column types: what the readers hand on (`Chunk`s, `BadRow`s) and in which Arrow types, from the model.

Column types follow the model's feature schema, not a reader's guess: a column of digits stays a string for
a string feature, an int column feeds a float feature, and a multi-valued numeric feature is read as text
in CSV (JSON lists such as "[0.5, 1.25]"; the core's converter parses them) and as lists elsewhere. The
casts every format shares live here: text -> numbers (exact for integral floats written as "180.0"),
whole floats -> ints, and the coercion of the types other readers (Ray's) guess to the model's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..features import AllowMissing, FeatureSpec, missing_columns, missing_message
from .files import InputFile

# ---------------------------------------------------------------------------------------------- chunks


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


def first_failing_row(n: int, fails: Callable[[int, int], str | None]) -> tuple[int, str | None]:
    """The first index in [0, n) whose one-row slice fails, found by bisection, with its message.

    fails(start, stop): the message of the failure of rows [start, stop), or None when they pass. A batch
    fails as a whole (a conversion, a cast); bisecting names its first bad row in log2(n) tries."""
    lo, hi, message = 0, n, None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        m = fails(lo, mid)
        if m is not None:
            hi, message = mid, m
        else:
            lo = mid
    return lo, fails(lo, lo + 1) or message


# ---------------------------------------------------------------------------------------------- model types


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


def is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def list_depth(t: pa.DataType) -> int:
    depth = 0
    while is_list(t):
        depth, t = depth + 1, t.value_type
    return depth


def is_scalar(spec: FeatureSpec) -> bool:
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
    if is_scalar(spec):
        return value_type(spec)
    if fmt == "csv":
        return pa.string()
    t = value_type(spec)
    for _ in range(1 if spec.kind == "varlen" else max(1, len(spec.shape))):
        t = pa.list_(t)
    return t


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


_TYPE_WORDS = {"float": "a number", "double": "a number", "int64": "an integer", "int32": "an integer"}


def expected(t: pa.DataType) -> str:
    """A reader's words for a column type in "expected ..., found ..." ("float" -> "a number")."""
    return _TYPE_WORDS.get(str(t), str(t))


def type_words(t: pa.DataType) -> str:
    """Words for any type, lists too ("a list of a number"): for columns of readers we did not write."""
    if pa.types.is_list(t):
        return f"a list of {type_words(t.value_type)}"
    if pa.types.is_floating(t):
        return "a number"
    if pa.types.is_integer(t):
        return "an integer"
    return str(t)


# ---------------------------------------------------------------------------------------------- casts


_FLOAT_TEXT = re.compile(
    r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)\s*$", re.I
)
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError)


def _bad_text_mask(values: pa.Array, target: pa.DataType) -> np.ndarray:
    """Rows of a text column that cannot be cast to a numeric target (nulls are not bad here)."""
    pattern = _INT_TEXT.pattern if pa.types.is_integer(target) else _FLOAT_TEXT.pattern
    ok = pc.match_substring_regex(values, pattern, ignore_case=True)
    bad = pc.and_(pc.is_valid(values), pc.invert(ok))
    return np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)


def cast_text(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast a text column to target; unparsable cells become null and are reported in the returned mask.

    For an integer target, an integral float ("180.0", "180.") is that integer, exactly: the zeros are cut
    off the text, never rounded through a float (ids beyond 2**53 stay exact)."""
    # Arrow's parsers refuse any cell with surrounding whitespace, so a cast that succeeds untrimmed is the
    # trimmed cast, without the trimmed copy (30% of a float column's cast): only padded text pays for it.
    with contextlib.suppress(*_CAST_ERRORS):
        return pc.cast(values, target), np.zeros(len(values), dtype=bool)
    try:
        return pc.cast(pc.utf8_trim_whitespace(values), target), np.zeros(len(values), dtype=bool)
    except _CAST_ERRORS:
        if pa.types.is_integer(target):
            values = pc.replace_substring_regex(
                pc.utf8_trim_whitespace(values), pattern=r"^([+-]?\d+)\.0*$", replacement=r"\1"
            )
            try:
                return pc.cast(values, target), np.zeros(len(values), dtype=bool)
            except _CAST_ERRORS:
                pass
        bad = _bad_text_mask(values, target)
        cleaned = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), values)
        try:
            return pc.cast(pc.utf8_trim_whitespace(cleaned), target), bad
        except _CAST_ERRORS:
            # The regex and Arrow's parser disagree on some cell: settle it one value at a time (rare path).
            out, bad = [], np.zeros(len(values), dtype=bool)
            for i, v in enumerate(values.to_pylist()):
                try:
                    out.append(None if v is None else pc.cast(pa.scalar(v.strip()), target).as_py())
                except _CAST_ERRORS:
                    out.append(None)
                    bad[i] = True
            return pa.array(out, target), bad


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


# ------------------------------------------------------------------------------ columns other readers typed


def typed_features(
    batch: pa.RecordBatch, schema: dict[str, FeatureSpec], paths: pa.Array | None
) -> pa.RecordBatch:
    """The model's feature columns of a batch in the model's types, from the types a reader that does not
    know the model guessed per file (Ray's: int for a float feature, binary for TFRecord strings,
    large_string from Parquet, ...). paths: each row's file, to name it in an error."""
    names, columns = [], []
    for name in batch.schema.names:
        spec = schema.get(name)
        if spec is None:
            continue
        names.append(name)
        columns.append(as_model_type(batch.column(name), spec, paths))
    return pa.RecordBatch.from_arrays(columns, names=names)


def where(paths: pa.Array | None, i: int) -> str:
    """The "file: " that names row i's file, when the rows' files are known (else "")."""
    if paths is None or i >= len(paths):
        return ""
    return f"{paths[i].as_py()}: "


def as_model_type(col: pa.Array, spec: FeatureSpec, paths: pa.Array | None = None) -> pa.Array:
    """One guessed-type column in its feature's type, or left for the core where the core reads it better."""
    target = column_type(spec, "parquet")
    if target is None or col.type == target:
        return col
    t = col.type
    if pa.types.is_list(target) and is_list(t) and list_depth(t) != list_depth(target):
        return col  # flat lists for a [3,3] feature, say: the core checks and reshapes them
    if pa.types.is_integer(target) and pa.types.is_floating(t):
        ints, bad = floats_to_ints(col, target)  # 180.0 is 180; 180.5 is an error naming its file
        if bad is not None:
            raise InputError(
                f"{where(paths, bad)}column '{spec.name}': expected an integer, found {col[bad].as_py()!r}"
            )
        return ints
    if pa.types.is_list(target):
        if is_text(t):
            # JSON-list text: the core parses it
            return col if pa.types.is_string(t) else col.cast(pa.string())
        if not is_list(t):
            target = value_type(spec)  # one value per row for a multi-valued feature: the core accepts it
            if t == target:
                return col
    elif pa.types.is_string(target) and not (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_large_string(t)
        or pa.types.is_null(t)
    ):
        return col  # a non-text column for a string feature: the core names it clearly
    try:
        return pc.cast(col, target)
    except _CAST_ERRORS as exc:
        first = str(exc).splitlines()[0]

        def fails(start: int, stop: int) -> str | None:
            try:
                pc.cast(col.slice(start, stop - start), target)
            except _CAST_ERRORS as e:
                return str(e).splitlines()[0]
            return None

        i, _ = first_failing_row(len(col), fails)
        value = col[i].as_py() if i < len(col) else None
        raise InputError(
            f"{where(paths, i)}column '{spec.name}': expected {type_words(target)}, found {value!r} ({first})"
        ) from None


__all__ = [
    "BadRow",
    "Chunk",
    "as_model_type",
    "cast_text",
    "check_columns",
    "column_type",
    "expected",
    "first_failing_row",
    "floats_to_ints",
    "is_list",
    "is_scalar",
    "list_depth",
    "split_bad_rows",
    "type_words",
    "typed_features",
    "value_type",
    "where",
]

"""JSON Lines files -> `Chunk`s in model types, with Arrow's block-wise JSON reader (bounded memory)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from ..errors import InputError
from ..features import AllowMissing, FeatureSpec
from .batches import read_batches, rebatch, restartable
from .files import InputFile
from .types import Chunk, check_columns, column_type, expected, floats_to_ints, is_scalar

_INT_PARSE_ERROR = re.compile(r"to u?int\d+, couldn't parse:\s*-?[\d.eE+]+$")


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
    reader = _JsonReader(file, schema, keep, block_size)
    row = 0
    for batch in rebatch(reader.batches(allow_missing, assembled), batch_size):
        wanted = [n for n in batch.schema.names if n in schema or n in keep]
        batch = batch.select(wanted)
        yield Chunk(batch, file, row)
        row += batch.num_rows


class _JsonReader:
    """One file's batches from Arrow's reader, opened again with integer features read as floats when
    the file writes 180.0 for 180 (each such value then checked to be whole)."""

    def __init__(
        self, file: InputFile, schema: dict[str, FeatureSpec], keep: Sequence[str], block_size: int
    ) -> None:
        self.file, self.schema, self.keep, self.block_size = file, schema, keep, block_size
        self.typed = {n: column_type(s, "jsonl") for n, s in schema.items() if s.kind != "varlen"}
        self.as_floats: set[str] = set()  # integer features read as float64 (the file writes 180.0 for 180)
        self.infer = bool(keep) or any(s.kind == "varlen" for s in schema.values())

    def _open(self) -> Any:
        types = {n: pa.float64() if n in self.as_floats else t for n, t in self.typed.items()}
        fields = [pa.field(n, t) for n, t in types.items() if t is not None]
        stream = pa.input_stream(str(self.file.path), compression="gzip" if self.file.compression else None)
        try:
            return pajson.open_json(
                stream,
                read_options=pajson.ReadOptions(use_threads=True, block_size=self.block_size),
                parse_options=pajson.ParseOptions(
                    explicit_schema=pa.schema(fields),
                    unexpected_field_behavior="infer" if self.infer else "ignore",
                ),
            )
        except pa.ArrowInvalid as e:
            if "Empty JSON file" in str(e) or "empty" in str(e).lower():
                return None  # no lines: no batches
            raise

    def _retry_as_floats(self, e: pa.ArrowInvalid) -> bool:
        # "Failed to convert JSON to int64, couldn't parse:180.0" names no column: all integer features.
        ints = {n for n, t in self.typed.items() if t is not None and pa.types.is_integer(t)}
        if self.as_floats or not ints or not _INT_PARSE_ERROR.search(str(e)):
            return False
        self.as_floats.update(ints)
        return True

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        return read_batches(self._open, self.file)

    def batches(
        self, allow_missing: AllowMissing, assembled: dict[str, list[str]] | None
    ) -> Iterator[pa.RecordBatch]:
        seen = 0
        try:
            for batch in restartable(self._raw_batches, self._retry_as_floats):
                if seen == 0:
                    # A JSON line may omit a key; a column absent from every line of the first block (Arrow's
                    # read unit, megabytes: not the --batch-size slice) is missing.
                    present = [
                        n
                        for n in batch.schema.names
                        if n not in self.schema or batch.column(n).null_count < batch.num_rows
                    ]
                    check_columns(self.file, present, self.schema, self.keep, allow_missing, assembled)
                if self.as_floats:
                    batch = _ints_from_floats(self.file, batch, self.as_floats, self.typed, seen)
                seen += batch.num_rows
                yield batch
        except pa.ArrowInvalid as e:
            raise InputError(_json_error(self.file, str(e), seen, self.schema)) from None


def first_keys(file: InputFile) -> list[str]:
    """The keys of the first JSON line, in order (a file's column names)."""
    with file.open_text() as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise InputError(f"{file}, line {number}: not valid JSON ({e})") from None
                return [str(k) for k in record] if isinstance(record, dict) else []
    return []


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
                f"expected {expected(types[name])}, found {value!r}{why}"
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
    scalar = {n: s for n, s in schema.items() if is_scalar(s)}
    with file.open_text() as fh:
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
                    want = "a string" if spec.dtype == "string" else "a number"
                    return f"{file}, line {number}, column '{name}': expected {want}, found {value!r}"
    return None


__all__ = ["first_keys", "read_jsonl"]

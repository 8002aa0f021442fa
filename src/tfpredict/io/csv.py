"""CSV (and TSV, .gz) files -> `Chunk`s in model types, with Arrow's multi-threaded reader.

Only an empty cell is missing. An integer column holding "180.0" (as pandas and TFX write them) is read
again as text from that point on and converted exactly; a cell that does not convert names its line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import InputError
from ..features import AllowMissing, FeatureSpec
from .batches import read_batches, rebatch, restartable
from .files import InputFile
from .types import BadRow, Chunk, cast_text, check_columns, column_type, expected, split_bad_rows


def read_header(file: InputFile) -> list[str]:
    """The column names in a CSV file's first line."""
    try:
        with file.open_text(newline="") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(f"{file}: cannot read CSV header: {e}") from None
    if not line.strip():
        raise InputError(f"{file}: empty file (a CSV input needs at least a header line)")
    return next(csv.reader([line], delimiter=file.delimiter))


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
    names = read_header(file)
    check_columns(file, names, schema, keep, allow_missing, assembled)
    wanted = list(dict.fromkeys(n for n in names if n in schema or n in keep))
    types: dict[str, pa.DataType] = {}
    for name in wanted:
        if name in schema:
            t = column_type(schema[name], "csv")
            if t is not None:
                types[name] = t
        else:
            types[name] = pa.string()  # --keep ids pass through as written (no type guessing across blocks)
    reader = _CsvReader(file, names, wanted, types, lenient, block_size)
    row = 0
    for batch in rebatch(reader.batches(), batch_size):
        chunk = Chunk(batch, file, row)
        if lenient:
            chunk = _convert_lenient(chunk, types)
            # Lines Arrow skipped as malformed: report them with this chunk (their numbers are approximate
            # only when the file has quoted newlines).
            while reader.invalid:
                chunk.bad_rows.append(_malformed(file, reader.invalid.pop(0)))
        row += batch.num_rows
        yield chunk


class _CsvReader:
    """One file's batches from Arrow's reader, opened again when an integer column turns out to hold
    integral floats (that column is then read as text and converted exactly)."""

    def __init__(
        self,
        file: InputFile,
        names: list[str],
        wanted: list[str],
        types: dict[str, pa.DataType],
        lenient: bool,
        block_size: int,
    ) -> None:
        self.file, self.names, self.wanted, self.types = file, names, wanted, types
        self.lenient, self.block_size = lenient, block_size
        # lenient: numbers read as text, cast by _convert_lenient (a bad cell is a bad row, not an error)
        self.read_types = {
            n: (pa.string() if lenient and not pa.types.is_string(t) else t) for n, t in types.items()
        }
        self.int_text: set[str] = set()  # integer columns found to hold integral floats: read as text
        self.invalid: list[Any] = []  # malformed lines Arrow reported (and, lenient, skipped)

    def _on_invalid(self, row: Any) -> str:
        self.invalid.append(row)
        return "skip" if self.lenient else "error"

    def _open(self) -> Any:
        return pacsv.open_csv(
            str(self.file.path),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=self.block_size),
            parse_options=pacsv.ParseOptions(
                delimiter=self.file.delimiter, invalid_row_handler=self._on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={**self.read_types, **{n: pa.string() for n in self.int_text}},
                include_columns=self.wanted,
                # Only an empty cell is a missing value (the feature is absent from the row), also for
                # text; "NA" or "null" are values (a country code, a category), not Arrow's null guesses.
                null_values=[""],
                strings_can_be_null=True,
            ),
        )

    def _retry_as_text(self, e: pa.ArrowInvalid) -> bool:
        """After "conversion error to int64" in an integer column: read that column as text (True)."""
        m = re.search(r"column #(\d+): CSV conversion error to u?int", str(e))
        column = self.names[int(m.group(1))] if m and int(m.group(1)) < len(self.names) else None
        if (
            column is None
            or column in self.int_text
            or self.invalid
            or not pa.types.is_integer(self.types[column])
        ):
            return False
        self.int_text.add(column)
        return True

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        return read_batches(self._open, self.file)

    def batches(self) -> Iterator[pa.RecordBatch]:
        row = 0
        try:
            for batch in restartable(self._raw_batches, self._retry_as_text):
                if self.int_text:
                    batch = _ints_from_text(self.file, batch, self.int_text, self.types, row)
                row += batch.num_rows
                yield batch
        except pa.ArrowInvalid as e:
            _raise_csv_error(self.file, str(e), self.names, self.types, self.invalid)


def _malformed(file: InputFile, inv: Any) -> BadRow:
    """A line Arrow skipped for its number of fields, as a bad row."""
    return BadRow(
        str(file),
        row=0,
        line=getattr(inv, "number", None),
        reason=f"expected {inv.expected_columns} columns, found {inv.actual_columns}",
        values={"text": inv.text},
    )


def _ints_from_text(
    file: InputFile, batch: pa.RecordBatch, columns: set[str], types: dict[str, pa.DataType], first_row: int
) -> pa.RecordBatch:
    """Text columns of integer features -> integers ("180" and "180.0" read 180); "180.5" names its line."""
    arrays = list(batch.columns)
    for name in columns:
        i = batch.schema.get_field_index(name)
        values, bad = cast_text(arrays[i], types[name])
        if bad.any():
            j = int(np.argmax(bad))
            raise InputError(
                f"{file}, line {first_row + j + 2}, column '{name}': "
                f"expected {expected(types[name])}, found {arrays[i][j].as_py()!r}"
            )
        arrays[i] = values
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _raise_csv_error(
    file: InputFile, message: str, names: list[str], types: dict[str, pa.DataType], invalid: list[Any]
) -> None:
    if invalid:
        inv = invalid[0]
        line = f", line {inv.number}" if getattr(inv, "number", None) else ""
        raise InputError(
            f"{file}{line}: expected {inv.expected_columns} columns, found {inv.actual_columns}: "
            f"{inv.text[:80]!r}"
        )
    if "conversion error" in message:
        _raise_conversion_error(file, message, names, types)
    raise InputError(f"{file}: {message.splitlines()[0]}")


def _raise_conversion_error(
    file: InputFile, message: str, names: list[str], types: dict[str, pa.DataType]
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
        parse_options=pacsv.ParseOptions(delimiter=file.delimiter),
        convert_options=pacsv.ConvertOptions(column_types={column: pa.string()}, include_columns=[column]),
    )
    row = 0
    for batch in reader:
        _, bad = cast_text(batch.column(0), target)
        if bad.any():
            i = int(np.argmax(bad))
            value = batch.column(0)[i].as_py()
            raise InputError(
                f"{file}, line {row + i + 2}, column '{column}': expected {expected(target)}, found {value!r}"
            )
        row += batch.num_rows
    raise InputError(f"{file}: column '{column}': {message}")


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
            col, bad = cast_text(col, target)
            for i in np.flatnonzero(bad & ~bad_any):
                found = batch.column(name)[int(i)].as_py()
                reasons[int(i)] = f"column '{name}': expected {expected(target)}, found {found!r}"
            bad_any |= bad
        columns.append(col)
    batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    return split_bad_rows(
        Chunk(batch, chunk.file, chunk.first_row, bad_rows=chunk.bad_rows), bad_any, reasons
    )


__all__ = ["read_csv", "read_header"]

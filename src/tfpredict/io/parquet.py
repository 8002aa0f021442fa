"""Parquet files -> `Chunk`s in model types, reading only the model's columns and the --keep columns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..features import AllowMissing, FeatureSpec
from .files import InputFile
from .types import (
    Chunk,
    cast_text,
    check_columns,
    column_type,
    expected,
    floats_to_ints,
    is_list,
    is_text,
    list_depth,
)


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


def parquet_columns(file: InputFile) -> list[str]:
    """The column names of a Parquet file's schema, in order."""
    try:
        return list(pq.read_schema(str(file.path)).names)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{file}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _cast_to_schema(
    file: InputFile, batch: pa.RecordBatch, schema: dict[str, FeatureSpec], first_row: int
) -> pa.RecordBatch:
    """Cast feature columns to the model's types (int -> float, large_string -> string, ...)."""
    columns, changed = [], False
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        spec = schema.get(name)
        target = column_type(spec, file.format) if spec is not None else None
        if target is not None and col.type != target:
            new = _cast_column(file, name, col, target, first_row)
            changed = changed or new is not col
            col = new
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names) if changed else batch


def _cast_column(file: InputFile, name: str, col: pa.Array, target: pa.DataType, first_row: int) -> pa.Array:
    """One column in its feature's type, or as found where the core reads it better."""
    if pa.types.is_string(target) and not is_text(col.type):
        return col  # a non-text column for a string feature: the core names it clearly
    if pa.types.is_list(target) and list_depth(col.type) != list_depth(target):
        return col  # one value per row, JSON-list text, flat lists for a [3,3] feature: the core reads them
    if pa.types.is_integer(target) and pa.types.is_floating(col.type):
        ints, first_bad = floats_to_ints(col, target)
        if first_bad is not None:
            raise InputError(
                f"{file}, row {first_row + first_bad + 1}, column '{name}': "
                f"expected {expected(target)}, found {col[first_bad].as_py()!r}"
            )
        return ints
    try:
        return pc.cast(col, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        if pa.types.is_string(col.type) and not is_list(target):
            _, bad = cast_text(col, target)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(
                    f"{file}, row {first_row + i + 1}, column '{name}': "
                    f"expected {expected(target)}, found {col[i].as_py()!r}"
                ) from None
        raise InputError(
            f"{file}, rows {first_row + 1}-{first_row + len(col)}, column '{name}': "
            f"expected {expected(target)}, found {col.type} values that do not convert "
            f"({str(e).splitlines()[0]})"
        ) from None


__all__ = ["parquet_columns", "read_parquet"]

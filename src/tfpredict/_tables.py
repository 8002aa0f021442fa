"""Containers -> columns: every supported input (DataFrame, Arrow Table/RecordBatch, dict of columns or of
scalars, list of row dicts) becomes {name: pyarrow.Array | numpy.ndarray} plus a row count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ._featurespec import Column
from .errors import InputError


class Table:
    """Input rows as named columns, whatever container they came in.

    found: every column name the input had, in its order (columns holds only those the model reads), so a
    missing-column error can list them and a column range ("f0:f63") can be resolved.
    """

    def __init__(
        self, columns: Mapping[str, Column], num_rows: int, found: Sequence[str] | None = None
    ) -> None:
        self.columns = dict(columns)
        self.num_rows = num_rows
        self.found = list(self.columns) if found is None else list(found)

    def slice(self, start: int, stop: int) -> Table:
        return Table(
            {k: v[start:stop] for k, v in self.columns.items()},
            max(0, min(stop, self.num_rows) - start),
            self.found,
        )


def as_table(data: Any, needed: Sequence[str] | None = None) -> Table:
    """Normalize a DataFrame, Arrow Table/RecordBatch, dict of arrays/lists/scalars or list of row dicts."""
    if isinstance(data, Table):
        return data
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        found = data.schema.names
        names = [n for n in found if needed is None or n in needed]
        cols = {n: combine(data.column(n)) for n in names}
        return Table(cols, data.num_rows, found)
    if _is_dataframe(data):
        found = [str(n) for n in data.columns]
        names = [n for n in found if needed is None or n in needed]
        return Table({n: _from_sequence(n, data[n]) for n in names}, len(data), found)
    if isinstance(data, Mapping):
        found = [str(k) for k in data]
        items = {str(k): v for k, v in data.items() if needed is None or str(k) in needed}
        if items and all(_is_scalar(v) for v in items.values()):
            # One row: plain numpy, no Arrow round trip (single-row latency is mostly overhead).
            return Table({k: _one_row(k, v) for k, v in items.items()}, 1, found)
        cols = {k: _from_sequence(k, v) for k, v in items.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(f"Columns have different lengths: {lengths}")
        return Table(cols, next(iter(lengths.values()), 0), found)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if not all(isinstance(row, Mapping) for row in data):
            raise InputError("A list input must hold one dict per row (feature name -> value)")
        if len(data) == 1:
            return as_table(dict(data[0]), needed)
        found = list(dict.fromkeys(str(k) for row in data for k in row))
        names = [n for n in found if needed is None or n in needed]
        return Table({n: _from_cells(n, [row.get(n) for row in data]) for n in names}, len(data), found)
    raise InputError(
        f"Cannot predict from a {type(data).__name__}: give a pandas DataFrame, a pyarrow Table or "
        "RecordBatch, a dict of columns, or a list of row dicts"
    )


def _from_cells(name: str, cells: list[Any]) -> Column:
    """One column of row-dict cells: plain numpy when every cell is a present number or every cell a
    string (cheap, the common case of small requests), else Arrow, which handles gaps and lists."""
    first = cells[0] if cells else None
    if isinstance(first, (str, bytes)) and all(isinstance(c, (str, bytes)) for c in cells):
        return np.array(cells, dtype=object)
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        if all(type(c) in (int, float) and c == c for c in cells):
            return np.array(cells)
    return _from_sequence(name, cells)


def combine(col: Any) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def _is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns") and hasattr(data, "iloc")


def _one_row(name: str, value: Any) -> Column:
    if value is None or (isinstance(value, float) and value != value):
        return pa.nulls(1)
    if isinstance(value, (str, bytes)):
        return np.array([value], dtype=object)
    return np.array([value])


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bytes, int, float, bool, np.generic)) or value is None


def _from_sequence(name: str, values: Any) -> Column:
    if isinstance(values, pa.ChunkedArray):
        return combine(values)
    if isinstance(values, pa.Array):
        return values
    if isinstance(values, np.ndarray) and (values.ndim >= 2 or values.dtype.kind in "biu"):
        return values  # no missing values possible: fed as is
    try:
        if type(values).__name__ == "Series":
            return pa.Array.from_pandas(values)
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        # Mixed types (e.g. "abc" among floats): read every cell as text, so that the cast to the
        # feature's type names the row that does not fit.
        try:
            cells = values.tolist() if hasattr(values, "tolist") else list(values)
            return pa.array([None if _missing(v) else str(v) for v in cells], type=pa.string())
        except Exception as exc:
            raise InputError(f"Column {name!r}: cannot read its values ({exc})") from exc


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def column_names(data: Any) -> list[str] | None:
    """The column names of an input, in order, without converting anything (None: not a known container)."""
    if isinstance(data, Table):
        return data.found
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        return list(data.schema.names)
    if _is_dataframe(data):
        return [str(n) for n in data.columns]
    if isinstance(data, Mapping):
        return [str(k) for k in data]
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return list(dict.fromkeys(str(k) for row in data if isinstance(row, Mapping) for k in row))
    return None

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
    row = one_row(data, needed)
    if row is not None:
        # One row: plain numpy, no Arrow round trip (single-row latency is mostly overhead).
        values, found = row
        return Table({k: _one_row(k, v) for k, v in values.items()}, 1, found)
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        found = data.schema.names
        names = [n for n in found if needed is None or n in needed]
        cols = {n: combine(data.column(n)) for n in names}
        return Table(cols, data.num_rows, found)
    if _is_dataframe(data):
        found = _frame_names(data)
        names = [n for n in found if needed is None or n in needed]
        return Table({n: _from_series(n, data[n]) for n in names}, len(data), found)
    if isinstance(data, Mapping):
        found = [str(k) for k in data]
        items = {str(k): v for k, v in data.items() if needed is None or str(k) in needed}
        cols = {k: as_arrow(k, v) for k, v in items.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(f"Columns have different lengths: {lengths}")
        return Table(cols, next(iter(lengths.values()), 0), found)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if not all(isinstance(row, Mapping) for row in data):
            raise InputError("A list input must hold one dict per row (feature name -> value)")
        found = list(dict.fromkeys(str(k) for row in data for k in row))
        names = [n for n in found if needed is None or n in needed]
        return Table({n: _from_cells(n, [row.get(n) for row in data]) for n in names}, len(data), found)
    raise InputError(
        f"Cannot predict from a {type(data).__name__}: give a pandas DataFrame, a pyarrow Table or "
        "RecordBatch, a dict of columns, or a list of row dicts"
    )


def one_row(data: Any, needed: Sequence[str] | None = None) -> tuple[dict[str, Any], list[str]] | None:
    """The cells of an input that is one row of plain values, and every column name it has; None for
    anything else (then the general path reads it). Recognizes a dict of scalars, a dict of one-element
    lists / tuples / arrays, a one-row DataFrame or Arrow Table / RecordBatch and a list of one row dict,
    by looking at the cells the model reads only: cheap, no Arrow."""
    if isinstance(data, Sequence) and len(data) == 1 and isinstance(data[0], Mapping):
        data = data[0]
    if isinstance(data, Mapping):
        found = [str(k) for k in data]
        cells = {str(k): v for k, v in data.items() if needed is None or str(k) in needed}
        if not cells:
            return None
        if all(_is_scalar(v) for v in cells.values()):
            return cells, found
        unwrapped = {k: _only_cell(v) for k, v in cells.items()}
        if all(v is not _NOT_ONE for v in unwrapped.values()):
            return unwrapped, found
        return None
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        if data.num_rows != 1 or len(set(data.schema.names)) != data.num_columns:
            return None
        names = data.schema.names
        wanted = [n for n in names if needed is None or n in needed]
        cells = {n: data.column(n)[0].as_py() for n in wanted}
        return (cells, list(names)) if all(_is_scalar(v) for v in cells.values()) else None
    if _is_dataframe(data) and len(data) == 1:
        names = _frame_names(data)
        if len(set(names)) != len(names):
            return None
        values = data.to_numpy(dtype=object)[0]
        cells = {n: v for n, v in zip(names, values, strict=True) if needed is None or n in needed}
        return (cells, names) if all(_is_scalar(v) for v in cells.values()) else None
    return None


_NOT_ONE = object()  # what _only_cell gives for a value that is not one plain cell


def _only_cell(value: Any) -> Any:
    """The one plain cell of a one-element list, tuple or 1-D array, else _NOT_ONE."""
    if isinstance(value, (list, tuple)) and len(value) == 1 and _is_scalar(value[0]):
        return value[0]
    if isinstance(value, np.ndarray) and value.shape == (1,) and value.dtype.kind in "biufUSO":
        cell = value[0]
        return cell if _is_scalar(cell) else _NOT_ONE
    return _NOT_ONE


def _frame_names(frame: Any) -> list[str]:
    return [str(n) for n in frame.columns.tolist()]


def _from_cells(name: str, cells: list[Any]) -> Column:
    """One column of row-dict cells: plain numpy when every cell is a present number or every cell a
    string (cheap, the common case of small requests), else Arrow, which handles gaps and lists."""
    first = cells[0] if cells else None
    if isinstance(first, (str, bytes)) and all(isinstance(c, (str, bytes)) for c in cells):
        return np.array(cells, dtype=object)
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        if all(type(c) in (int, float) and c == c for c in cells):
            return np.array(cells)
    return as_arrow(name, cells)


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


def _from_series(name: str, series: Any) -> Column:
    """A DataFrame column: its numpy array when it has a plain numpy dtype (numbers, Python objects), which
    convert_column feeds without Arrow when nothing is missing (else it takes the Arrow path itself)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufO":
        return series.to_numpy()
    return as_arrow(name, series)


def as_arrow(name: str, values: Any) -> Column:
    """One column's values as Arrow (missing: None / NaN -> null), or as they are when they are already an
    Arrow array or a numpy array that cannot hold a missing value."""
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
        return _frame_names(data)
    if isinstance(data, Mapping):
        return [str(k) for k in data]
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return list(dict.fromkeys(str(k) for row in data if isinstance(row, Mapping) for k in row))
    return None

"""Table columns (Arrow / numpy / pandas) -> feed arrays for each feature of a model's input schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureSpec:
    """One input a user supplies: a parsed tf.Example feature, or a raw signature tensor.

    kind: "dense" (FixedLenFeature), "varlen" (VarLenFeature: 0..n values per row), or "tensor" (a raw
    signature input fed as is). dtype is a TensorFlow dtype name ("float32", "int64", "string", ...).
    shape is the per-row shape ((), (3,), ...; None for an unknown dimension). default is the value a
    missing dense feature takes (a scalar or a flat list), or None when the feature is required.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    kind: str
    default: Any = None

    @property
    def required(self) -> bool:
        return self.kind in ("dense", "tensor") and self.default is None

    def describe(self) -> str:
        shape = "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        text = f"{self.name}: {self.dtype}{shape} {self.kind}"
        if self.kind == "dense":
            text += " (required)" if self.default is None else f" (default {self.default!r})"
        return text


# --------------------------------------------------------------------------------------------------------
# Columns: every supported input container becomes {name: pyarrow.Array | numpy.ndarray} plus a row count.

import json  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from .errors import InputError  # noqa: E402

Column = Any  # pyarrow.Array, or a numpy array of ndim >= 2 (one row per leading index)

NUMPY_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "bfloat16": np.float32,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": object,
}
ARROW_TYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "float16": pa.float32(),
    "bfloat16": pa.float32(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "int16": pa.int16(),
    "int8": pa.int8(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


class Table:
    """Input rows as named columns, whatever container they came in."""

    def __init__(self, columns: Mapping[str, Column], num_rows: int) -> None:
        self.columns = dict(columns)
        self.num_rows = num_rows

    def slice(self, start: int, stop: int) -> Table:
        return Table(
            {k: v[start:stop] for k, v in self.columns.items()}, max(0, min(stop, self.num_rows) - start)
        )


def as_table(data: Any, needed: Sequence[str] | None = None) -> Table:
    """Normalize a DataFrame, Arrow Table/RecordBatch, dict of arrays/lists/scalars or list of row dicts."""
    if isinstance(data, Table):
        return data
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        names = [n for n in data.schema.names if needed is None or n in needed]
        cols = {n: _combine(data.column(n)) for n in names}
        return Table(cols, data.num_rows)
    if _is_dataframe(data):
        names = [str(n) for n in data.columns if needed is None or str(n) in needed]
        return Table({n: _from_sequence(n, data[n]) for n in names}, len(data))
    if isinstance(data, Mapping):
        items = {str(k): v for k, v in data.items() if needed is None or str(k) in needed}
        if items and all(_is_scalar(v) for v in items.values()):
            # One row: plain numpy, no Arrow round trip (single-row latency is mostly overhead).
            return Table({k: _one_row(k, v) for k, v in items.items()}, 1)
        cols = {k: _from_sequence(k, v) for k, v in items.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(f"Columns have different lengths: {lengths}")
        return Table(cols, next(iter(lengths.values()), 0))
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if not all(isinstance(row, Mapping) for row in data):
            raise InputError("A list input must hold one dict per row (feature name -> value)")
        if len(data) == 1:
            return as_table(dict(data[0]), needed)
        names = list(dict.fromkeys(str(k) for row in data for k in row))
        names = [n for n in names if needed is None or n in needed]
        return Table({n: _from_cells(n, [row.get(n) for row in data]) for n in names}, len(data))
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


def _combine(col: Any) -> pa.Array:
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
        return _combine(values)
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


# --------------------------------------------------------------------------------------------------------
# Feeds: one column + its FeatureSpec -> the arrays the graph is fed.


@dataclass
class SparseValue:
    """A VarLenFeature as ParseExample would produce it: indices [nnz, 2], values [nnz], dense_shape [2]."""

    indices: np.ndarray
    values: np.ndarray
    dense_shape: np.ndarray


def convert_column(column: Column | None, spec: FeatureSpec, num_rows: int) -> Any:
    """The feed value for one feature: a numpy array (dense, tensor) or a SparseValue (varlen)."""
    if isinstance(column, np.ndarray) and column.ndim == 1:
        fast = _from_plain_numpy(column, spec, num_rows)
        if fast is not None:
            return fast
        column = pa.array(column, from_pandas=True)
    if spec.kind == "varlen":
        if column is None:
            return _empty_sparse(spec, num_rows)
        return _varlen(column, spec, num_rows)
    if column is None:
        if spec.default is None:
            raise InputError(f"Missing column {spec.name!r}: the model needs it ({spec.describe()})")
        return _filled(spec, num_rows)
    return _dense(column, spec, num_rows)


def _from_plain_numpy(column: np.ndarray, spec: FeatureSpec, num_rows: int) -> Any:
    """One value per row and none missing: cast and reshape without Arrow. None when it does not apply."""
    kind = column.dtype.kind
    is_string = spec.dtype == "string"
    if is_string and kind == "O" and all(isinstance(v, (str, bytes)) for v in column):
        values = column
    elif not is_string and (kind in "biu" or (kind == "f" and not np.isnan(column).any())):
        if spec.dtype not in NUMPY_DTYPES or kind == "f" and spec.dtype in ("int64", "int32"):
            return None  # let the checked Arrow cast report lossy float -> int
        values = column.astype(NUMPY_DTYPES[spec.dtype], copy=False)
    else:
        return None
    if spec.kind == "varlen":
        rows = np.arange(num_rows, dtype=np.int64)
        indices = np.stack([rows, np.zeros_like(rows)], axis=1)
        return SparseValue(indices, values, np.array([num_rows, 1 if num_rows else 0], np.int64))
    shape = _concrete(spec.shape)
    if _size(shape) != 1:
        return None
    return values.reshape((num_rows, *shape))


def _size(shape: tuple[int | None, ...]) -> int:
    size = 1
    for d in shape:
        size *= d if d is not None else 1
    return size


def _filled(spec: FeatureSpec, num_rows: int) -> np.ndarray:
    dtype = NUMPY_DTYPES.get(spec.dtype, object)
    one: np.ndarray = np.asarray(spec.default, dtype=dtype).reshape(-1)
    return np.broadcast_to(one, (num_rows, one.size)).reshape((num_rows, *_concrete(spec.shape))).copy()


def _concrete(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    return tuple(1 if d is None else d for d in shape)


def _dense(column: Column, spec: FeatureSpec, num_rows: int) -> np.ndarray:
    shape = _concrete(spec.shape)
    size = _size(shape)
    dtype = NUMPY_DTYPES.get(spec.dtype)
    if dtype is None:
        raise InputError(f"Feature {spec.name!r}: dtype {spec.dtype} is not supported")
    if isinstance(column, np.ndarray):  # already shaped rows (ndim >= 2)
        if int(np.prod(column.shape[1:])) != size:
            raise InputError(
                f"Feature {spec.name!r}: expected {size} value(s) per row (shape {list(shape)}), "
                f"found shape {list(column.shape[1:])}"
            )
        return _numpy_cast(column, spec).reshape((num_rows, *shape))
    if _is_list_type(column.type):
        return _dense_from_lists(column, spec, shape, size, num_rows)
    if size != 1 and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return _dense_from_lists(_parse_json_lists(column, spec), spec, shape, size, num_rows)
    if size != 1:
        raise InputError(
            f"Feature {spec.name!r}: expected {size} values per row (shape {list(shape)}), found one scalar "
            'per row; give a list column (or JSON lists like "[1, 2]" in a CSV cell)'
        )
    if column.null_count:
        if spec.default is None:
            row = _first_null(column)
            raise InputError(f"Row {row}: feature {spec.name!r} is missing and has no default")
        column = pc.fill_null(_cast(column, spec), _arrow_scalar(spec.default, spec))
    values = _to_numpy(_cast(column, spec), spec)
    return values.reshape((num_rows, *shape))


def _is_list_type(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _dense_from_lists(
    column: pa.Array, spec: FeatureSpec, shape: tuple[int, ...], size: int, n: int
) -> np.ndarray:
    if column.null_count:
        if spec.default is None:
            raise InputError(
                f"Row {_first_null(column)}: feature {spec.name!r} is missing and has no default"
            )
        default = np.asarray(spec.default).reshape(-1).tolist()
        column = pa.array([default if v is None else v for v in column.to_pylist()], type=column.type)
    if pa.types.is_fixed_size_list(column.type):
        lengths = np.full(len(column), column.type.list_size)
        flat = column.flatten()
    else:
        offsets = column.offsets.to_numpy()
        lengths = np.diff(offsets)
        flat = column.flatten()
    bad = np.flatnonzero(lengths != size)
    if bad.size:
        raise InputError(
            f"Row {bad[0]}: feature {spec.name!r} expects {size} value(s) per row (shape {list(shape)}), "
            f"found {lengths[bad[0]]}"
        )
    return _to_numpy(_cast(flat, spec), spec).reshape((n, *shape))


def _parse_json_lists(column: pa.Array, spec: FeatureSpec) -> pa.Array:
    """CSV cells holding JSON lists ("[1.5, 2]") -> a list array. Only for multi-valued features."""
    out: list[list[Any] | None] = []
    for text in column.to_pylist():
        if text is None or text == "":
            out.append(None)
            continue
        try:
            value = json.loads(text)
        except ValueError:
            value = text.split()
        out.append(value if isinstance(value, list) else [value])
    item = ARROW_TYPES.get(spec.dtype, pa.string())
    try:
        return pa.array(out, type=pa.list_(item))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(
            f"Feature {spec.name!r}: cannot read the cells as lists of {spec.dtype}: {exc}"
        ) from exc


def _first_null(column: pa.Array) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _arrow_scalar(value: Any, spec: FeatureSpec) -> pa.Scalar:
    if isinstance(value, list):
        value = value[0]
    return pa.scalar(value, type=ARROW_TYPES.get(spec.dtype, pa.string()))


def _cast(column: pa.Array, spec: FeatureSpec) -> pa.Array:
    """Cast a column to the feature's type; a value that does not fit names its row."""
    target = ARROW_TYPES.get(spec.dtype)
    if target is None:
        raise InputError(f"Feature {spec.name!r}: dtype {spec.dtype} is not supported")
    if column.type == target:
        return column
    if spec.dtype == "string":
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            return column
        if pa.types.is_floating(column.type):
            # pandas turns an int column with gaps into floats: 2134 must still read "2134", not "2134.0"
            as_np = column.to_numpy(zero_copy_only=False)
            finite = as_np[~np.isnan(as_np)]
            if np.all(finite == np.round(finite)):
                column = pc.cast(column, pa.int64())
    try:
        return pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise _cast_error(column, spec, exc) from exc


def _cast_error(column: pa.Array, spec: FeatureSpec, exc: Exception) -> InputError:
    target = ARROW_TYPES[spec.dtype]
    for row, value in enumerate(column.to_pylist()):
        if value is None:
            continue
        try:
            pc.cast(pa.array([value]), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return InputError(f"Row {row}: feature {spec.name!r} expects {spec.dtype}, found {value!r}")
    return InputError(f"Feature {spec.name!r}: expects {spec.dtype}, found {column.type} ({exc})")


def _to_numpy(column: pa.Array, spec: FeatureSpec) -> np.ndarray:
    if spec.dtype == "string":
        return column.to_numpy(zero_copy_only=False)
    return column.to_numpy(zero_copy_only=False)


def _numpy_cast(array: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    dtype = NUMPY_DTYPES[spec.dtype]
    if dtype is object:
        return array.astype(object)
    try:
        if array.dtype.kind in "OUS":
            return array.astype(np.float64).astype(dtype)
        return array.astype(dtype, copy=False)
    except ValueError as exc:
        raise InputError(
            f"Feature {spec.name!r}: expects {spec.dtype}, found values it cannot read ({exc})"
        ) from exc


def _empty_sparse(spec: FeatureSpec, num_rows: int) -> SparseValue:
    dtype = NUMPY_DTYPES.get(spec.dtype, object)
    return SparseValue(np.zeros((0, 2), np.int64), np.zeros((0,), dtype), np.array([num_rows, 0], np.int64))


def _varlen(column: Column, spec: FeatureSpec, num_rows: int) -> SparseValue:
    if isinstance(column, np.ndarray):  # a 2-D array: every row has the same number of values
        column = pa.FixedSizeListArray.from_arrays(pa.array(column.reshape(-1)), column.shape[1])
    if _is_list_type(column.type):
        if pa.types.is_fixed_size_list(column.type):
            lengths = np.full(len(column), column.type.list_size, np.int64)
            lengths[column.is_null().to_numpy(zero_copy_only=False)] = 0
        else:
            offsets = column.offsets.to_numpy()
            lengths = np.diff(offsets).astype(np.int64)
            if column.null_count:
                lengths[column.is_null().to_numpy(zero_copy_only=False)] = 0
        values = column.flatten()
        if values.null_count:
            raise InputError(f"Feature {spec.name!r}: a list holds a missing value (null)")
        rows = np.repeat(np.arange(len(column), dtype=np.int64), lengths)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(len(values), dtype=np.int64) - np.repeat(starts, lengths)
        width = int(lengths.max()) if lengths.size else 0
    else:
        if spec.dtype != "string" and (
            pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        ):
            if pc.any(pc.match_substring(column, "[")).as_py():
                return _varlen(_parse_json_lists(column, spec), spec, num_rows)
        if column.null_count:
            valid = column.is_valid()
            rows = np.flatnonzero(valid.to_numpy(zero_copy_only=False)).astype(np.int64)
            values = column.filter(valid)
        else:
            rows = np.arange(len(column), dtype=np.int64)
            values = column
        cols = np.zeros_like(rows)
        width = 1 if rows.size else 0
    indices = np.stack([rows, cols], axis=1) if rows.size else np.zeros((0, 2), np.int64)
    return SparseValue(indices, _to_numpy(_cast(values, spec), spec), np.array([num_rows, width], np.int64))

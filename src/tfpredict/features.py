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
from collections.abc import Collection, Iterable, Mapping, Sequence  # noqa: E402

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
        cols = {n: _combine(data.column(n)) for n in names}
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
# Which input columns feed which feature: missing columns (an error unless allowed) and assembled inputs.

#: allow_missing: True (any column may be absent: TF Serving's per-request semantics), or the names of the
#: columns that may be absent (each then reads as missing in every row, as an absent tf.Example feature).
AllowMissing = bool | Collection[str]
#: assemble: model input -> its source columns, as a list of names, "a:b" (a range of columns in input
#: order) or "a,b,c".
Assemble = Mapping[str, str | Sequence[str]]


def parse_columns(text: str, found: Sequence[str] | None) -> list[str]:
    """Source columns of an assembled input: "f0:f63" (every column from f0 to f63, in input order, which
    `found` gives) or "f0,f1,f2" (these columns)."""
    text = text.strip()
    if ":" in text and "," not in text:
        first, last = (t.strip() for t in text.split(":", 1))
        if found is None:
            raise InputError(f"Column range {text!r} needs the input's column order; give the names instead")
        absent = [c for c in (first, last) if c not in found]
        if absent:
            raise InputError(
                f"Column range {text!r}: no column {absent[0]!r} in the input; columns found: {_shown(found)}"
            )
        i, j = found.index(first), found.index(last)
        if j < i:
            raise InputError(f"Column range {text!r}: {last!r} comes before {first!r} in the input")
        return list(found[i : j + 1])
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError(f"No source columns in {text!r}; give a range a:b or a list a,b,c")
    return names


def resolve_assemble(assemble: Assemble | None, found: Sequence[str] | None) -> dict[str, list[str]]:
    """Every assembled input's source columns as names (ranges resolved against the input's columns)."""
    out: dict[str, list[str]] = {}
    for name, sources in (assemble or {}).items():
        out[name] = parse_columns(sources, found) if isinstance(sources, str) else [str(c) for c in sources]
        if not out[name]:
            raise InputError(f"Assembled input {name!r}: no source columns")
    return out


def check_assemble(features: Mapping[str, FeatureSpec], assemble: Assemble | None) -> None:
    """Assemble only the model's inputs, from as many columns as each takes (fails before reading data)."""
    for name, sources in (assemble or {}).items():
        spec = features.get(name)
        if spec is None:
            raise InputError(
                f"assemble: the model has no input {name!r}; its inputs: {', '.join(features) or '(none)'}"
            )
        if spec.kind == "varlen":
            raise InputError(
                f"assemble: {name!r} is a var-len feature; only fixed-shape inputs are assembled"
            )
        size = _size(spec.shape) if all(d is not None for d in spec.shape) else None
        if not isinstance(sources, str) and size is not None and len(sources) != size:
            raise InputError(
                f"assemble: input {spec.describe()} takes {size} values per row, "
                f"but {len(sources)} columns were given"
            )


def source_schema(
    features: Mapping[str, FeatureSpec], assemble: Mapping[str, Sequence[str]]
) -> dict[str, FeatureSpec]:
    """The columns a table must have for these features: each assembled input replaced by its source
    columns (one value each, of the input's dtype), in the model's order."""
    check_assemble(features, assemble)
    out: dict[str, FeatureSpec] = {}
    for name, spec in features.items():
        if name not in assemble:
            out[name] = spec
            continue
        for column in assemble[name]:
            if column in out or (column in features and column not in assemble):
                raise InputError(f"assemble: column {column!r} feeds more than one input")
            out[column] = FeatureSpec(column, spec.dtype, (), "dense", None)
    return out


def missing_columns(
    found: Iterable[str], schema: Mapping[str, FeatureSpec], allow: AllowMissing
) -> list[str]:
    """The columns of `schema` absent from `found` that are not allowed to be."""
    if allow is True:
        return []
    allowed = set() if allow is False else {str(a) for a in allow}
    present = set(found)
    return [n for n in schema if n not in present and n not in allowed]


def missing_message(
    missing: Sequence[str],
    schema: Mapping[str, FeatureSpec],
    found: Sequence[str],
    assembled: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """ "missing column 'city' needed by the model (...); columns found: ...; how to allow it" (one line)."""
    into = {c: name for name, cols in (assembled or {}).items() for c in cols}
    what = "; ".join(
        f"{schema[n].describe()}" if n not in into else f"{n}: a source column of input {into[n]!r}"
        for n in missing[:4]
    )
    names = ", ".join(f"'{n}'" for n in missing[:8]) + (", ..." if len(missing) > 8 else "")
    plural = "s" if len(missing) > 1 else ""
    allow = ",".join(missing[:8])
    return (
        f"missing column{plural} {names} needed by the model ({what}); columns found: {_shown(found)}. "
        f"To predict as if every row lacked {'them' if plural else 'it'}: --allow-missing {allow} "
        f"(Python: allow_missing={list(missing[:8])!r})"
    )


def _shown(found: Sequence[str], limit: int = 12) -> str:
    return (", ".join(found[:limit]) + (", ..." if len(found) > limit else "")) or "(none)"


def input_table(
    data: Any,
    features: Mapping[str, FeatureSpec],
    allow_missing: AllowMissing = (),
    assemble: Assemble | None = None,
) -> Table:
    """Rows in any container -> a Table with one column per feature: missing columns fail here (before any
    prediction) unless allowed, and assembled inputs are stacked from their source columns."""
    if isinstance(data, Table) and not assemble:
        table = data
    else:
        found = column_names(data)
        resolved = resolve_assemble(assemble, found)
        schema = source_schema(features, resolved) if resolved else dict(features)
        table = as_table(data, needed=list(schema))
        missing = missing_columns(table.found, schema, allow_missing)
        if missing:
            raise InputError(_sentence(missing_message(missing, schema, table.found, resolved)))
        if resolved:
            table = assemble_columns(table, resolved, features)
        return table
    missing = missing_columns(table.found, features, allow_missing)
    if missing:
        raise InputError(_sentence(missing_message(missing, features, table.found)))
    return table


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


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


def assemble_columns(
    table: Table, assemble: Mapping[str, Sequence[str]], features: Mapping[str, FeatureSpec]
) -> Table:
    """Stack each assembled input's source columns into one [rows, values] array (vectorized, per column);
    a missing cell names its row and source column."""
    columns = dict(table.columns)
    n = table.num_rows
    for name, sources in assemble.items():
        spec = features[name]
        one = FeatureSpec(name, spec.dtype, (), "dense", None)
        parts = []
        for source in sources:
            column = columns.pop(source, None)
            if column is None:
                raise InputError(
                    f"Missing column {source!r}: a source column of input {name!r} ({spec.describe()})"
                )
            try:
                parts.append(np.asarray(convert_column(column, one, n)).reshape(n))
            except InputError as exc:
                raise InputError(
                    exc.message.replace(f"feature {name!r}", f"column {source!r} (assembled into {name!r})")
                ) from None
        columns[name] = np.stack(parts, axis=1) if parts else np.zeros((n, 0))
    return Table(columns, n, table.found)


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
        if spec.dtype not in NUMPY_DTYPES:
            return None
        if kind == "f" and np.dtype(NUMPY_DTYPES[spec.dtype]).kind in "iu" and not _integral(column, spec):
            return None  # let the checked Arrow cast name the row of 180.5 for an int feature
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


def _integral(column: np.ndarray, spec: FeatureSpec) -> bool:
    """Floats that are whole numbers within the int type's range (180.0 for an int64 feature): exact."""
    info = np.iinfo(NUMPY_DTYPES[spec.dtype])
    return bool(
        np.array_equal(column, np.trunc(column))
        and (column.size == 0 or (column.min() >= info.min and column.max() < float(info.max)))
    )


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
    if _list_depth(column.type) > 1:
        return _dense_from_nested(column, spec, n)
    lengths = _list_lengths(column)
    flat = column.flatten()
    bad = np.flatnonzero(lengths != size)
    if bad.size:
        raise InputError(
            f"Row {bad[0]}: feature {spec.name!r} expects {size} value(s) per row (shape {list(shape)}), "
            f"found {lengths[bad[0]]}"
        )
    if flat.null_count:
        row = _first_null(flat) // max(size, 1)
        raise InputError(f"Row {row}: feature {spec.name!r} has a missing value (null) inside its list")
    return _to_numpy(_cast(flat, spec), spec).reshape((n, *shape))


def _dense_from_nested(column: pa.Array, spec: FeatureSpec, n: int) -> np.ndarray:
    """Nested list cells ([[1, 2, 3], [4, 5, 6]]) -> [rows, *shape], each level checked against the declared
    shape (an unknown dimension takes the first row's length, the same for every row)."""
    depth = _list_depth(column.type)
    if depth != len(spec.shape):
        raise InputError(
            f"Feature {spec.name!r}: expects shape {list(spec.shape)} per row, "
            f"found lists nested {depth} deep"
        )
    dims: list[int] = []
    per_row = 1  # lists of this level per row
    level = column
    for d, want in enumerate(spec.shape):
        lengths = _list_lengths(level)
        size = want if want is not None else (int(lengths[0]) if lengths.size else 0)
        bad = np.flatnonzero(lengths != size)
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"Row {i // per_row}: feature {spec.name!r} expects shape {list(spec.shape)}, "
                f"found {lengths[i]} value(s) at depth {d + 1} where {size} belong"
            )
        dims.append(size)
        per_row *= size
        level = level.flatten()
    if level.null_count:
        row = _first_null(level) // max(per_row, 1)
        raise InputError(f"Row {row}: feature {spec.name!r} has a missing value (null) inside its list")
    return _to_numpy(_cast(level, spec), spec).reshape((n, *dims))


def _list_depth(t: pa.DataType) -> int:
    depth = 0
    while _is_list_type(t):
        depth, t = depth + 1, t.value_type
    return depth


def _list_lengths(column: pa.Array) -> np.ndarray:
    """Values in each list of a list array (0 for a null list)."""
    if pa.types.is_fixed_size_list(column.type):
        lengths = np.full(len(column), column.type.list_size, np.int64)
    else:
        lengths = np.diff(column.offsets.to_numpy()).astype(np.int64)
    if column.null_count:
        lengths[column.is_null().to_numpy(zero_copy_only=False)] = 0
    return lengths


def _parse_json_lists(column: pa.Array, spec: FeatureSpec) -> pa.Array:
    """CSV cells holding JSON lists ("[1.5, 2]", "[[1, 2], [3, 4]]") -> a list array. Only for multi-valued
    features. Arrow's JSON parser reads the whole column at once; cells it cannot read as the feature's
    list type (a bare number, space-separated values) take the per-cell path, which names the row."""
    item = ARROW_TYPES.get(spec.dtype, pa.string())
    depth = len(spec.shape) if spec.kind != "varlen" and len(spec.shape) > 1 else 1
    nested = item
    for _ in range(depth):
        nested = pa.list_(nested)
    fast = _json_column(column, nested)
    if fast is None and depth > 1:
        fast = _json_column(column, pa.list_(item))  # flat lists of all the values are fine too
    if fast is not None:
        return fast
    out: list[Any] = []
    for text in column.to_pylist():
        if text is None or text == "":
            out.append(None)
            continue
        try:
            value = json.loads(text)
        except ValueError:
            value = text.split()
        out.append(value if isinstance(value, list) else [value])
    try:
        return pa.array(out, type=pa.list_(item)) if depth == 1 else pa.array(out)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        for row, value in enumerate(out):
            try:
                pa.array([value], type=pa.list_(item) if depth == 1 else None)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise InputError(
                    f"Row {row}: feature {spec.name!r} expects lists of {spec.dtype}, "
                    f"found {column[row].as_py()!r}"
                ) from None
        raise InputError(
            f"Feature {spec.name!r}: cannot read the cells as lists of {spec.dtype}: {exc}"
        ) from exc


def _json_column(column: pa.Array, list_type: pa.DataType) -> pa.Array | None:
    """A text column of JSON lists parsed by Arrow in one pass (no Python per cell); None if any cell is
    not a JSON value of list_type."""
    import pyarrow.json as pajson

    if len(column) == 0:
        return None
    if not pa.types.is_string(column.type):  # large_string (pandas' string dtype): int32 offsets suffice
        try:
            column = column.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    text = pc.if_else(pc.equal(pc.fill_null(column, ""), ""), pa.scalar("null"), column)
    lines = pc.binary_join_element_wise(pa.scalar('{"v":'), text, pa.scalar("}\n"), pa.scalar(""))
    if pc.any(pc.match_substring(text, "\n")).as_py():
        return None
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    try:
        parsed = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, data.size + 1)),
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema([("v", list_type)]), unexpected_field_behavior="error"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if parsed.num_rows != len(column):
        return None
    return _combine(parsed.column("v"))


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

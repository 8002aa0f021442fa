"""Feeds: one column + its FeatureSpec -> the array the graph is fed (dense, raw tensor) or a SparseValue
(var-len), vectorized; plain numpy columns skip Arrow altogether."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._casts import arrow_scalar, cast, first_null, numpy_cast, to_numpy
from ._featurespec import NUMPY_DTYPES, Column, FeatureSpec, SparseValue, concrete, shape_size
from ._lists import dense_from_lists, is_list_type, parse_json_lists
from ._tables import as_arrow
from .errors import InputError


def convert_column(column: Column | None, spec: FeatureSpec, num_rows: int) -> Any:
    """The feed value for one feature: a numpy array (dense, tensor) or a SparseValue (varlen)."""
    if isinstance(column, np.ndarray) and column.ndim == 1:
        fast = _from_plain_numpy(column, spec, num_rows)
        if fast is not None:
            return fast
        # the checked Arrow path: it names the row of a value that does not fit, and reads gaps as nulls
        column = pa.array(column) if column.dtype.kind in "biu" else as_arrow(spec.name, column)
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
    if is_string and kind == "O" and _all_text(column):
        values = column
    elif not is_string and (kind in "biu" or (kind == "f" and not np.isnan(column).any())):
        if spec.dtype not in NUMPY_DTYPES:
            return None
        target = np.dtype(NUMPY_DTYPES[spec.dtype])
        if kind == "f" and target.kind in "iu" and not _integral(column, spec):
            return None  # let the checked Arrow cast name the row of 180.5 for an int feature
        if kind in "iu" and not _exact(column, target):
            return None  # as for 180.5: the Arrow cast names the row of an int the feature cannot hold
        values = column.astype(target, copy=False)
    else:
        return None
    if spec.kind == "varlen":
        rows = np.arange(num_rows, dtype=np.int64)
        indices = np.stack([rows, np.zeros_like(rows)], axis=1)
        return SparseValue(indices, values, np.array([num_rows, 1 if num_rows else 0], np.int64))
    shape = concrete(spec.shape)
    if shape_size(shape) != 1:
        return None
    return values.reshape((num_rows, *shape))


def _all_text(column: np.ndarray) -> bool:
    """Every cell a str or bytes (the types are collected in C: no Python loop over the rows)."""
    return set(map(type, column)) <= {str, bytes}


def _exact(column: np.ndarray, target: np.dtype) -> bool:
    """Ints that the target dtype holds exactly (a float32 feature: |v| <= 2^24), as Arrow's checked cast."""
    if column.size == 0 or target.kind == "b":
        return True
    low, high = int(column.min()), int(column.max())
    if target.kind == "f":
        limit = 2 ** (np.finfo(target).nmant + 1)
        return -limit <= low and high <= limit
    info = np.iinfo(target)
    return info.min <= low and high <= info.max


def _integral(column: np.ndarray, spec: FeatureSpec) -> bool:
    """Floats that are whole numbers within the int type's range (180.0 for an int64 feature): exact."""
    info = np.iinfo(NUMPY_DTYPES[spec.dtype])
    return bool(
        np.array_equal(column, np.trunc(column))
        and (column.size == 0 or (column.min() >= info.min and column.max() < float(info.max)))
    )


def _filled(spec: FeatureSpec, num_rows: int) -> np.ndarray:
    dtype = NUMPY_DTYPES.get(spec.dtype, object)
    one: np.ndarray = np.asarray(spec.default, dtype=dtype).reshape(-1)
    return np.broadcast_to(one, (num_rows, one.size)).reshape((num_rows, *concrete(spec.shape))).copy()


def _dense(column: Column, spec: FeatureSpec, num_rows: int) -> np.ndarray:
    shape = concrete(spec.shape)
    size = shape_size(shape)
    dtype = NUMPY_DTYPES.get(spec.dtype)
    if dtype is None:
        raise InputError(f"Feature {spec.name!r}: dtype {spec.dtype} is not supported")
    if isinstance(column, np.ndarray):  # already shaped rows (ndim >= 2)
        if int(np.prod(column.shape[1:])) != size:
            raise InputError(
                f"Feature {spec.name!r}: expected {size} value(s) per row (shape {list(shape)}), "
                f"found shape {list(column.shape[1:])}"
            )
        return numpy_cast(column, spec).reshape((num_rows, *shape))
    if is_list_type(column.type):
        return dense_from_lists(column, spec, shape, size, num_rows)
    if size != 1 and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return dense_from_lists(parse_json_lists(column, spec), spec, shape, size, num_rows)
    if size != 1:
        raise InputError(
            f"Feature {spec.name!r}: expected {size} values per row (shape {list(shape)}), found one scalar "
            'per row; give a list column (or JSON lists like "[1, 2]" in a CSV cell)'
        )
    if column.null_count:
        if spec.default is None:
            row = first_null(column)
            raise InputError(f"Row {row}: feature {spec.name!r} is missing and has no default")
        column = pc.fill_null(cast(column, spec), arrow_scalar(spec.default, spec))
    values = to_numpy(cast(column, spec), spec)
    return values.reshape((num_rows, *shape))


def _empty_sparse(spec: FeatureSpec, num_rows: int) -> SparseValue:
    dtype = NUMPY_DTYPES.get(spec.dtype, object)
    return SparseValue(np.zeros((0, 2), np.int64), np.zeros((0,), dtype), np.array([num_rows, 0], np.int64))


def _varlen(column: Column, spec: FeatureSpec, num_rows: int) -> SparseValue:
    if isinstance(column, np.ndarray):  # a 2-D array: every row has the same number of values
        column = pa.FixedSizeListArray.from_arrays(pa.array(column.reshape(-1)), column.shape[1])
    if is_list_type(column.type):
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
                return _varlen(parse_json_lists(column, spec), spec, num_rows)
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
    return SparseValue(indices, to_numpy(cast(values, spec), spec), np.array([num_rows, width], np.int64))

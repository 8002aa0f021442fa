"""Casts of one column to a feature's dtype (Arrow and numpy); a value that does not fit names its row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._featurespec import ARROW_TYPES, NUMPY_DTYPES, FeatureSpec
from .errors import InputError


def first_null(column: pa.Array) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def arrow_scalar(value: Any, spec: FeatureSpec) -> pa.Scalar:
    if isinstance(value, list):
        value = value[0]
    return pa.scalar(value, type=ARROW_TYPES.get(spec.dtype, pa.string()))


def cast(column: pa.Array, spec: FeatureSpec) -> pa.Array:
    """Cast a column to the feature's type; a value that does not fit names its row."""
    target = ARROW_TYPES.get(spec.dtype)
    if target is None:
        raise InputError(f"Feature {spec.name!r}: dtype {spec.dtype} is not supported")
    if column.type == target:
        return column
    if spec.dtype == "string":
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            return column
        if pa.types.is_large_string(column.type):  # pandas' str columns: the same cells, no copy to string
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


def to_numpy(column: pa.Array, spec: FeatureSpec) -> np.ndarray:
    """A feed array. Text becomes bytes objects: TensorFlow's strings are bytes, and Arrow makes bytes
    ~40% faster than str (no UTF-8 decoding), while the tensor TensorFlow builds is the same."""
    if spec.dtype == "string" and pa.types.is_string(column.type):
        column = column.cast(pa.binary())
    elif spec.dtype == "string" and pa.types.is_large_string(column.type):
        column = column.cast(pa.large_binary())
    return column.to_numpy(zero_copy_only=False)


def numpy_cast(array: np.ndarray, spec: FeatureSpec) -> np.ndarray:
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

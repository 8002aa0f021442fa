"""List cells -> dense rows: Arrow list columns (flat or nested) checked against the declared shape, and
text cells of JSON lists ("[1.5, 2]") parsed by Arrow in one pass."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._casts import cast, first_null, to_numpy
from ._featurespec import ARROW_TYPES, FeatureSpec
from ._tables import combine
from .errors import InputError


def is_list_type(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def dense_from_lists(
    column: pa.Array, spec: FeatureSpec, shape: tuple[int, ...], size: int, n: int
) -> np.ndarray:
    if column.null_count:
        if spec.default is None:
            raise InputError(f"Row {first_null(column)}: feature {spec.name!r} is missing and has no default")
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
        row = first_null(flat) // max(size, 1)
        raise InputError(f"Row {row}: feature {spec.name!r} has a missing value (null) inside its list")
    return to_numpy(cast(flat, spec), spec).reshape((n, *shape))


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
        row = first_null(level) // max(per_row, 1)
        raise InputError(f"Row {row}: feature {spec.name!r} has a missing value (null) inside its list")
    return to_numpy(cast(level, spec), spec).reshape((n, *dims))


def _list_depth(t: pa.DataType) -> int:
    depth = 0
    while is_list_type(t):
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


def parse_json_lists(column: pa.Array, spec: FeatureSpec) -> pa.Array:
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
    return combine(parsed.column("v"))

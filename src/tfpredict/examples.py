"""The fallback path: rows -> serialized tf.Example strings, for exports whose parse op cannot be bypassed.

The protobuf wire format is written directly, for all rows at once: varints and fixed headers as padded byte
matrices (numpy), strings and per-row byte runs as Arrow binary arrays, joined row by row in Arrow. What one
row holds (every tag is a field number << 3 | 2, "length-delimited"):

    Example   = 0x0A len Features
    Features  = (0x0A len MapEntry)*            one per feature present in the row, sorted by name
    MapEntry  = 0x0A len name 0x12 len Feature
    Feature   = (0x0A BytesList | 0x12 FloatList | 0x1A Int64List) with its len before it
    BytesList = (0x0A len bytes)*    FloatList = 0x0A len float32-le*    Int64List = 0x0A len varint*
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .features import FeatureSpec, SparseValue

_FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 0x0A, 0x12, 0x1A  # Feature's oneof fields 1, 2, 3
_FIELD_1 = b"\x0a"  # Example.features, Features.feature, MapEntry.key, the lists' value
_EMPTY = pa.scalar(b"", pa.large_binary())

Padded = tuple[np.ndarray, np.ndarray]  # (m, w) uint8 bytes, (m, w) bool: which of them are real


def serialize_examples(
    converted: dict[str, Any], features: dict[str, FeatureSpec], num_rows: int
) -> np.ndarray:
    """One serialized tf.Example per row, from already converted feature values (missing var-len values
    are left out of the Example, as a parsing receiver expects)."""
    if num_rows == 0:
        return np.empty(0, dtype=object)
    pieces: list[pa.Array] = []
    features_len = np.zeros(num_rows, np.int64)
    for name in sorted(converted):
        value = converted[name]
        if isinstance(value, SparseValue):
            counts = np.bincount(value.indices[:, 0], minlength=num_rows).astype(np.int64)
            header, body = _map_entries(name, features[name], np.asarray(value.values), counts, counts > 0)
        else:
            flat = np.asarray(value).reshape(num_rows, -1)
            counts = np.full(num_rows, flat.shape[1], np.int64)
            header, body = _map_entries(name, features[name], flat.reshape(-1), counts, None)
        pieces += [header, body]
        features_len += _lengths(header) + _lengths(body)
    top = _compact(_hstack(_const(_FIELD_1, num_rows), _varint(features_len)))
    rows = pc.binary_join_element_wise(top, *pieces, _EMPTY)
    return rows.to_numpy(zero_copy_only=False)


def _map_entries(
    name: str, spec: FeatureSpec, values: np.ndarray, counts: np.ndarray, present: np.ndarray | None
) -> tuple[pa.Array, pa.Array]:
    """Per row, one feature's map entry as two byte runs: everything up to its values, and the values.
    Rows where `present` is False get nothing (a var-len feature without values is left out)."""
    n = len(counts)
    row_starts = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=row_starts[1:])
    if spec.dtype == "string":
        tag = _BYTES_LIST
        strings = _binary_values(values)
        prefixes = _compact(_hstack(_const(_FIELD_1, len(strings)), _varint(_lengths(strings))))
        encoded = pc.binary_join_element_wise(prefixes, strings, _EMPTY)  # one (0x0A len bytes) per value
        body = _regroup(encoded, row_starts)
        list_header: list[Padded] = []
        list_len = _lengths(body)
    else:
        if spec.dtype in _FLOAT_DTYPES:
            tag = _FLOAT_LIST
            data = np.ascontiguousarray(values, dtype="<f4").view(np.uint8)
            value_ends = 4 * row_starts
        else:
            tag = _INT64_LIST
            matrix, mask = _varint(values.astype(np.int64).view(np.uint64))
            data = matrix[mask]
            value_ends = np.zeros(len(values) + 1, np.int64)
            np.cumsum(mask.sum(axis=1), out=value_ends[1:])
            value_ends = value_ends[row_starts]
        body = _binary(value_ends, data)
        packed_len = _lengths(body)
        packed = counts > 0  # an empty packed field is not written at all
        list_header = [_when(_const(_FIELD_1, n), packed), _when(_varint(packed_len), packed)]
        list_len = np.where(packed, 1 + _varint_len(packed_len) + packed_len, 0)
    key = name.encode()
    key_field = _FIELD_1 + _varint_bytes(len(key)) + key + b"\x12"
    feature_len = 1 + _varint_len(list_len) + list_len
    entry_len = len(key_field) + _varint_len(feature_len) + feature_len
    header = _hstack(
        _const(_FIELD_1, n),
        _varint(entry_len),
        _const(key_field, n),
        _varint(feature_len),
        _const(bytes([tag]), n),
        _varint(list_len),
        *list_header,
    )
    if present is not None:  # rows without values have an empty body already
        header = _when(header, present)
    return _compact(header), body


# ---------------------------------------------------------------------------------------------- varints


def _varint_len(values: np.ndarray) -> np.ndarray:
    """Bytes in the varint of each value (1..10)."""
    v = np.asarray(values).astype(np.uint64, copy=False)
    lengths = np.ones(v.shape, np.int64)
    for k in range(1, 10):
        more = v >= np.uint64(1 << (7 * k))
        if not more.any():
            break
        lengths += more
    return lengths


def _varint(values: np.ndarray) -> Padded:
    """The varint of every value, one per row of a padded matrix (negative int64 -> 10 bytes)."""
    v = np.asarray(values).astype(np.uint64, copy=False)
    lengths = _varint_len(v)
    width = int(lengths.max()) if v.size else 1
    positions = np.arange(width)
    shifts = (7 * positions).astype(np.uint64)
    matrix = ((v[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    matrix[positions < lengths[:, None] - 1] |= 0x80  # continuation bit on all but the last byte
    return matrix, positions < lengths[:, None]


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ---------------------------------------------------------------------------------------------- byte runs


def _const(data: bytes, m: int) -> Padded:
    row = np.frombuffer(data, np.uint8)
    return np.broadcast_to(row, (m, len(data))), np.ones((m, len(data)), bool)


def _when(piece: Padded, keep: np.ndarray) -> Padded:
    return piece[0], piece[1] & keep[:, None]


def _hstack(*pieces: Padded) -> Padded:
    """Pieces written one after the other in each row."""
    return np.hstack([p[0] for p in pieces]), np.hstack([p[1] for p in pieces])


def _compact(piece: Padded) -> pa.Array:
    """A padded matrix -> one binary value per row holding its real bytes (row-major order keeps them in
    order)."""
    matrix, mask = piece
    offsets = np.zeros(len(mask) + 1, np.int64)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    return _binary(offsets, matrix[mask])


def _binary(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    offsets = np.ascontiguousarray(offsets, np.int64)
    data = np.ascontiguousarray(data, np.uint8)
    return pa.Array.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _offsets(array: pa.Array) -> np.ndarray:
    buffer = array.buffers()[1]
    return np.frombuffer(buffer, np.int64, count=len(array) + 1, offset=array.offset * 8)


def _lengths(array: pa.Array) -> np.ndarray:
    return np.diff(_offsets(array))


def _regroup(array: pa.Array, row_starts: np.ndarray) -> pa.Array:
    """Consecutive values joined into one per row: row i holds values row_starts[i] to row_starts[i + 1]."""
    data = array.buffers()[2]
    return pa.Array.from_buffers(
        pa.large_binary(), len(row_starts) - 1, [None, pa.py_buffer(_offsets(array)[row_starts]), data]
    )


def _binary_values(values: np.ndarray) -> pa.Array:
    """String values (str, encoded as UTF-8, or bytes) as one large_binary array."""
    if values.dtype.kind in "US":
        values = values.astype(object)
    try:
        array = pa.array(values, type=pa.large_binary())
        if not array.null_count:
            return array
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Not text (numbers, None): written as their str(), as the protobuf-object path always did.
    return pa.array([v if isinstance(v, bytes) else str(v).encode() for v in values], pa.large_binary())

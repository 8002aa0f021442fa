"""TensorProto <-> numpy without going through TensorFlow's slower Python helpers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from .status import invalid

# dtype enum -> (numpy dtype, typed value field)
_TYPES: dict[int, tuple[Any, str]] = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_STRING: (object, "string_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"),
}
DTYPE_ENUMS = {
    "float32": types_pb2.DT_FLOAT,
    "float64": types_pb2.DT_DOUBLE,
    "int32": types_pb2.DT_INT32,
    "int16": types_pb2.DT_INT16,
    "int8": types_pb2.DT_INT8,
    "uint8": types_pb2.DT_UINT8,
    "uint16": types_pb2.DT_UINT16,
    "int64": types_pb2.DT_INT64,
    "uint32": types_pb2.DT_UINT32,
    "uint64": types_pb2.DT_UINT64,
    "bool": types_pb2.DT_BOOL,
    "string": types_pb2.DT_STRING,
    "float16": types_pb2.DT_HALF,
}
_NUMPY_TO_ENUM = {
    np.dtype(v[0]): k for k, v in _TYPES.items() if v[0] is not object and k != types_pb2.DT_UINT16
}
_NUMPY_TO_ENUM[np.dtype(np.uint16)] = types_pb2.DT_UINT16


def dtype_name(enum: int) -> str:
    return types_pb2.DataType.Name(enum)


# A tensor given one value (or none) for its whole shape is filled, as TF Serving does; beyond this size the
# fill is refused (a 29-byte Predict with tensor_shape [50000000] used to take 3.2 GB on its way through).
MAX_FILLED_BYTES = 64 << 20


def to_ndarray(t: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    entry = _TYPES.get(t.dtype)
    if entry is None:
        raise invalid(f"Input {name!r}: tensor dtype {dtype_name(t.dtype)} is not supported")
    np_dtype, field = entry
    if t.tensor_shape.unknown_rank:
        raise invalid(f"Input {name!r}: tensor shape has unknown rank")
    shape = tuple(d.size for d in t.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise invalid(f"Input {name!r}: tensor shape {list(shape)} has a negative dimension")
    count = math.prod(shape)  # a Python int: np.prod wraps around for huge shapes
    if np_dtype is not object and t.tensor_content:
        arr = np.frombuffer(t.tensor_content, dtype=np_dtype)
        if arr.size != count:
            raise invalid(
                f"Input {name!r}: tensor_content holds {arr.size} values; shape {list(shape)} needs {count}"
            )
        return arr.reshape(shape)
    values = getattr(t, field)
    n = len(values)
    if np_dtype is object:
        arr = np.empty(n, dtype=object)
        arr[:] = list(values)
    elif t.dtype == types_pb2.DT_HALF:
        arr = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        arr = np.asarray(values, dtype=np_dtype)
    if n == count:
        return arr.reshape(shape)
    filled = count * (np.dtype(np_dtype).itemsize if np_dtype is not object else 8)
    if filled > MAX_FILLED_BYTES:  # a few bytes of request must not become gigabytes of tensor
        raise invalid(
            f"Input {name!r}: shape {list(shape)} ({count} values) from {n} value(s) would fill "
            f"{filled} bytes, beyond the limit of {MAX_FILLED_BYTES}"
        )
    if n == 1 or (n == 0 and count == 0):
        return np.full(shape, arr[0] if n else 0, dtype=arr.dtype)  # one value fills the tensor
    if n == 0:
        return (
            np.zeros(shape, dtype=arr.dtype) if np_dtype is not object else np.full(shape, b"", dtype=object)
        )
    raise invalid(f"Input {name!r}: {n} values do not fill shape {list(shape)} ({count} values)")


def from_ndarray(arr: Any, out: tensor_pb2.TensorProto) -> None:
    """Fill a TensorProto with typed value fields (float_val, ...), as TF Serving's responses have them."""
    arr = np.asarray(arr)
    shape = out.tensor_shape
    for d in arr.shape:
        shape.dim.add().size = d
    kind = arr.dtype.kind
    if kind in "OSU":
        out.dtype = types_pb2.DT_STRING
        out.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in arr.reshape(-1))
        return
    enum = _NUMPY_TO_ENUM.get(arr.dtype)
    if enum is None:
        raise invalid(f"Output dtype {arr.dtype} cannot be written to a TensorProto")
    out.dtype = enum
    flat = arr.reshape(-1)
    if enum == types_pb2.DT_HALF:
        out.half_val.extend(flat.view(np.uint16).tolist())
    else:
        getattr(out, _TYPES[enum][1]).extend(flat.tolist())


def from_ndarray_packed(arr: Any, out: tensor_pb2.TensorProto) -> None:
    """Fill a TensorProto with numbers as little-endian tensor_content bytes (strings stay string_val),
    as TF Serving does with --enable_serialization_as_tensor_content."""
    arr = np.asarray(arr)
    enum = _NUMPY_TO_ENUM.get(arr.dtype) if arr.dtype.kind not in "OSU" else None
    if enum is None:
        from_ndarray(arr, out)
        return
    for d in arr.shape:
        out.tensor_shape.dim.add().size = d
    out.dtype = enum
    out.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def shape_proto(shape: tuple[int | None, ...] | None) -> tensor_shape_pb2.TensorShapeProto:
    p = tensor_shape_pb2.TensorShapeProto()
    if shape is None:
        p.unknown_rank = True
    else:
        for d in shape:
            p.dim.add().size = -1 if d is None else d
    return p


def serialized_examples(inp: Any) -> np.ndarray:
    """tensorflow.serving.Input -> serialized tf.Examples; context features are merged into each example
    (a proto merge: serialized context followed by serialized example)."""
    which = inp.WhichOneof("kind")
    if which == "example_list":
        examples = inp.example_list.examples
        out = np.empty(len(examples), dtype=object)
        if len(examples) == 1:  # the common single-row request: skip the list
            out[0] = examples[0].SerializeToString()
        else:
            out[:] = [e.SerializeToString() for e in examples]
    elif which == "example_list_with_context":
        ctx = inp.example_list_with_context.context.SerializeToString()
        examples = inp.example_list_with_context.examples
        out = np.empty(len(examples), dtype=object)
        out[:] = [ctx + e.SerializeToString() for e in examples]
    else:
        raise invalid("Input is empty: give example_list or example_list_with_context")
    if not len(out):
        raise invalid("Input is empty: no examples")
    return out

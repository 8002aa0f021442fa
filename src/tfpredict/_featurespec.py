"""What a model's input looks like to a table: one FeatureSpec per input, the dtypes it maps to in numpy and
Arrow, and the feed value of a var-len feature (a leaf module: everything in features imports it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


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


@dataclass
class SparseValue:
    """A VarLenFeature as ParseExample would produce it: indices [nnz, 2], values [nnz], dense_shape [2]."""

    indices: np.ndarray
    values: np.ndarray
    dense_shape: np.ndarray


def shape_size(shape: tuple[int | None, ...]) -> int:
    size = 1
    for d in shape:
        size *= d if d is not None else 1
    return size


def concrete(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    return tuple(1 if d is None else d for d in shape)

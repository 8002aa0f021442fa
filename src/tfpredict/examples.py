"""The fallback path: rows -> serialized tf.Example strings, for exports whose parse op cannot be bypassed."""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import FeatureSpec, SparseValue


def serialize_examples(
    converted: dict[str, Any], features: dict[str, FeatureSpec], num_rows: int
) -> np.ndarray:
    """One serialized tf.Example per row, from already converted feature values (missing var-len values
    are left out of the Example, as a parsing receiver expects)."""
    from tensorflow.core.example import example_pb2, feature_pb2

    per_row: list[dict[str, Any]] = [{} for _ in range(num_rows)]
    for key, value in converted.items():
        spec = features[key]
        if isinstance(value, SparseValue):
            rows = value.indices[:, 0]
            bounds = np.searchsorted(rows, np.arange(num_rows + 1))
            for i in range(num_rows):
                if bounds[i + 1] > bounds[i]:
                    per_row[i][key] = _feature(feature_pb2, value.values[bounds[i] : bounds[i + 1]], spec)
        else:
            flat = value.reshape(num_rows, -1)
            for i in range(num_rows):
                per_row[i][key] = _feature(feature_pb2, flat[i], spec)
    out = np.empty(num_rows, dtype=object)
    for i, feats in enumerate(per_row):
        out[i] = example_pb2.Example(features=feature_pb2.Features(feature=feats)).SerializeToString()
    return out


def _feature(pb: Any, values: np.ndarray, spec: FeatureSpec) -> Any:
    if spec.dtype == "string":
        return pb.Feature(bytes_list=pb.BytesList(value=[_bytes(v) for v in values]))
    if spec.dtype in ("float32", "float64", "float16"):
        return pb.Feature(float_list=pb.FloatList(value=values.astype(np.float32).tolist()))
    return pb.Feature(int64_list=pb.Int64List(value=values.astype(np.int64).tolist()))


def _bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()

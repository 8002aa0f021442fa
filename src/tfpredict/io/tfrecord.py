"""TFRecord files of serialized tf.Example (gzip too) -> `Chunk`s: the raw records, or parsed columns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..features import FeatureSpec
from .files import InputFile
from .types import Chunk


def _dataset(file: InputFile, **options: Any) -> Any:
    import tensorflow as tf

    compression = "GZIP" if file.compression else ""
    return tf.data.TFRecordDataset(str(file.path), compression_type=compression, **options)


def first_example(file: InputFile) -> Any:
    """The file's first record as a tf.train.Example (None for an empty file)."""
    import tensorflow as tf

    first = next(iter(_dataset(file).take(1)), None)
    return None if first is None else tf.train.Example.FromString(first.numpy())


def example_features(file: InputFile) -> list[str]:
    """The feature names of the first tf.Example, sorted (a file's column names)."""
    example = first_example(file)
    return [] if example is None else sorted(example.features.feature)


def _keep_spec(file: InputFile, keep: Sequence[str]) -> dict[str, Any]:
    """The tf.io parse spec of --keep columns, learned from the first record of the file."""
    import tensorflow as tf

    example = first_example(file)
    if example is None:
        return {}
    spec = {}
    for name in keep:
        if name not in example.features.feature:
            raise InputError(f"{file}: --keep feature '{name}' is not in the tf.Example records")
        kind = example.features.feature[name].WhichOneof("kind")
        dtype = {"bytes_list": tf.string, "int64_list": tf.int64, "float_list": tf.float32}.get(
            kind, tf.string
        )
        spec[name] = tf.io.FixedLenFeature([], dtype)
    return spec


def parse_spec(schema: dict[str, FeatureSpec]) -> dict[str, Any]:
    """tf.io parse spec of a feature schema (for TFRecord inputs to a model that does not parse Examples)."""
    import tensorflow as tf

    spec: dict[str, Any] = {}
    for name, f in schema.items():
        dtype = tf.as_dtype(f.dtype)
        if f.kind == "varlen" or any(d is None for d in f.shape):
            spec[name] = tf.io.RaggedFeature(dtype)
        else:
            spec[name] = tf.io.FixedLenFeature(list(f.shape), dtype, default_value=f.default)
    return spec


def _tensor_to_arrow(t: Any) -> pa.Array:
    import tensorflow as tf

    if isinstance(t, tf.RaggedTensor):
        values = _tensor_to_arrow(t.flat_values)
        return pa.ListArray.from_arrays(pa.array(t.row_splits.numpy().astype(np.int32)), values)
    a = t.numpy()
    if a.dtype == object:
        flat = pa.array([v.decode("utf-8", "replace") for v in a.reshape(-1)], pa.string())
    else:
        flat = pa.array(a.reshape(-1))
    if a.ndim <= 1 or (a.ndim == 2 and a.shape[1] == 1):
        return flat
    width = int(np.prod(a.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(flat, width).cast(pa.list_(flat.type))


def read_tfrecord(
    file: InputFile,
    schema: dict[str, FeatureSpec],
    batch_size: int,
    keep: Sequence[str] = (),
    *,
    serialized: bool = True,
) -> Iterator[Chunk]:
    """Stream a TFRecord file of serialized tf.Example (gzip too).

    serialized=True: chunks carry the raw records, for a signature that parses Examples itself (the cheapest
    path: no decode on our side). Otherwise the records are parsed with the model's parse spec into columns.
    --keep columns are parsed either way.
    """
    import tensorflow as tf

    keep_spec = _keep_spec(file, keep) if keep else {}
    spec = {} if serialized else parse_spec(schema)
    ds = _dataset(file, buffer_size=8 << 20).batch(batch_size)
    full_spec = {**spec, **keep_spec}
    row = 0
    it = iter(ds)
    while True:
        try:
            records = next(it)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.OpError) as e:
            raise InputError(f"{file}: corrupt TFRecord data after record {row} ({e.message})") from None
        arrays: dict[str, pa.Array] = {}
        if full_spec:
            try:
                parsed = tf.io.parse_example(records, full_spec)
            except tf.errors.InvalidArgumentError as e:
                raise InputError(
                    f"{file}, records {row + 1}-{row + int(records.shape[0])}: {e.message.splitlines()[0]}"
                ) from None
            arrays = {n: _tensor_to_arrow(parsed[n]) for n in full_spec}
        n = int(records.shape[0])
        batch = pa.RecordBatch.from_pydict(arrays) if arrays else pa.RecordBatch.from_pydict({})
        if not arrays:
            batch = pa.record_batch([pa.nulls(n)], names=["__rows__"]).select([])
        yield Chunk(batch, file, row, serialized=records.numpy() if serialized else None)
        row += n


__all__ = ["example_features", "first_example", "parse_spec", "read_tfrecord"]

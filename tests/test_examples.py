"""The vectorized tf.Example encoder writes what protobuf would, and ParseExample reads the inputs back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tfpredict.examples import serialize_examples
from tfpredict.features import FeatureSpec, SparseValue

ROWS = 257
STRINGS = np.array(
    ["", "a", "café", "日本語", "🙂 emoji", "x" * 200, b"\xff\x00raw bytes", b"", "tab\tnew\nline"],
    dtype=object,
)
FLOATS = np.array(
    [0.0, -0.0, 1.5, -2.25, 3.4e38, -1e-30, 1e-45, np.nan, np.inf, -np.inf, 123456.789], dtype=np.float64
)
INT64S = np.array(
    [0, 1, -1, 127, 128, 300, 16383, 16384, -300, 2**31, -(2**31), 2**35, 2**62, 2**63 - 1, -(2**63)],
    np.int64,
)
INT32S = np.array([0, 1, -1, 127, 128, 2**31 - 1, -(2**31), 99999], np.int32)
POOLS = {"float32": FLOATS.astype(np.float32), "float64": FLOATS, "int64": INT64S, "int32": INT32S}
SPEC_DTYPE = {
    "float32": "float32",
    "float64": "float32",
    "int64": "int64",
    "int32": "int64",
    "object": "string",
}


def draw(rng: np.random.Generator, array_dtype: str, size: int) -> np.ndarray:
    pool = STRINGS if array_dtype == "object" else POOLS[array_dtype]
    return pool[rng.integers(0, len(pool), size=size)]


def make_feature(
    rng: np.random.Generator, name: str, array_dtype: str, layout: str, n: int
) -> tuple[FeatureSpec, Any, list[list[Any] | None]]:
    """A spec, the converted value serialize_examples takes, and each row's values (None: no entry)."""
    dtype = SPEC_DTYPE[array_dtype]
    if layout == "varlen":
        counts = rng.integers(0, 5, size=n)
        counts[:3] = [0, 4, 1]  # an empty row, a full row, a single value, whatever the seed
        rows = np.repeat(np.arange(n), counts)
        cols = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        values = draw(rng, array_dtype, len(rows))
        indices = np.stack([rows, cols], axis=1).astype(np.int64)
        sparse = SparseValue(indices, values, np.array([n, counts.max()], np.int64))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        per_row = [list(values[a:b]) if b > a else None for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return FeatureSpec(name, dtype, (None,), "varlen"), sparse, per_row
    shape: tuple[int, ...] = {"scalar": (), "vector": (3,), "matrix": (2, 2)}[layout]
    dense = draw(rng, array_dtype, n * int(np.prod(shape))).reshape((n, *shape))
    return FeatureSpec(name, dtype, shape, "dense"), dense, [list(r) for r in dense.reshape(n, -1)]


def reference_example(per_feature: dict[str, tuple[FeatureSpec, list[Any] | None]]) -> bytes:
    """What protobuf objects serialize for one row, map keys sorted (deterministic)."""
    import tensorflow as tf

    feats = {}
    for name, (spec, values) in per_feature.items():
        if values is None:
            continue
        if spec.dtype == "string":
            encoded = [v if isinstance(v, bytes) else v.encode() for v in values]
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=encoded))
        elif spec.dtype == "float32":
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
        else:
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


LAYOUTS = ("scalar", "vector", "matrix", "varlen")
ARRAY_DTYPES = ("float32", "float64", "int64", "int32", "object")


@pytest.fixture(scope="module")
def mixed() -> tuple[dict[str, FeatureSpec], dict[str, Any], dict[str, list[Any]]]:
    """One feature per (array dtype, layout), named so that sorted order interleaves kinds."""
    rng = np.random.default_rng(7)
    specs, converted, rows = {}, {}, {}
    for i, (array_dtype, layout) in enumerate((d, k) for d in ARRAY_DTYPES for k in LAYOUTS):
        name = f"{chr(ord('z') - i)}_{array_dtype}_{layout}"
        specs[name], converted[name], rows[name] = make_feature(rng, name, array_dtype, layout, ROWS)
    return specs, converted, rows


def test_bytes_equal_protobuf_objects(mixed: Any) -> None:
    specs, converted, rows = mixed
    got = serialize_examples(converted, specs, ROWS)
    assert got.dtype == object and got.shape == (ROWS,)
    for i in range(ROWS):
        want = reference_example({name: (specs[name], rows[name][i]) for name in specs})
        assert got[i] == want, f"row {i}"


def test_parse_example_reads_the_inputs_back(mixed: Any) -> None:
    import tensorflow as tf

    specs, converted, _ = mixed
    tf_dtypes = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}
    parse_spec = {
        name: tf.io.VarLenFeature(tf_dtypes[s.dtype])
        if s.kind == "varlen"
        else tf.io.FixedLenFeature(s.shape, tf_dtypes[s.dtype])
        for name, s in specs.items()
    }
    parsed = tf.io.parse_example(serialize_examples(converted, specs, ROWS), parse_spec)
    for name, spec in specs.items():
        value = converted[name]
        if spec.kind == "varlen":
            np.testing.assert_array_equal(parsed[name].indices.numpy(), value.indices, err_msg=name)
            np.testing.assert_array_equal(parsed[name].dense_shape.numpy(), value.dense_shape, err_msg=name)
            have, want = parsed[name].values.numpy(), value.values
        else:
            have, want = parsed[name].numpy(), value
        if spec.dtype == "string":
            want = np.array([v if isinstance(v, bytes) else v.encode() for v in want.ravel()], dtype=object)
            assert have.ravel().tolist() == want.tolist(), name
        else:
            want = want.astype(np.float32 if spec.dtype == "float32" else np.int64)
            np.testing.assert_array_equal(have, want, err_msg=name)  # NaN == NaN here


@pytest.mark.parametrize("array_dtype", ARRAY_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_kind_alone(array_dtype: str, layout: str) -> None:
    rng = np.random.default_rng([ARRAY_DTYPES.index(array_dtype), LAYOUTS.index(layout)])
    spec, value, rows = make_feature(rng, "feature", array_dtype, layout, 50)
    got = serialize_examples({"feature": value}, {"feature": spec}, 50)
    assert [bytes(b) for b in got] == [reference_example({"feature": (spec, r)}) for r in rows]


def test_rows_without_any_feature_are_empty_examples() -> None:
    spec = FeatureSpec("tags", "string", (None,), "varlen")
    value = SparseValue(np.array([[1, 0]], np.int64), np.array(["x"], object), np.array([3, 1], np.int64))
    got = serialize_examples({"tags": value}, {"tags": spec}, 3)
    assert got[0] == got[2] == b"\n\x00"  # an Example whose (empty) features are set, as protobuf writes it
    assert got[1] == reference_example({"tags": (spec, ["x"])})


def test_no_rows() -> None:
    spec = FeatureSpec("x", "float32", (), "dense")
    assert serialize_examples({"x": np.zeros(0, np.float32)}, {"x": spec}, 0).shape == (0,)


def test_long_values_need_multibyte_lengths() -> None:
    spec = FeatureSpec("text", "string", (), "dense")
    values = np.array(["a" * 127, "b" * 128, "c" * 20000, "d" * 2_100_000], dtype=object)
    got = serialize_examples({"text": values}, {"text": spec}, 4)
    assert [bytes(b) for b in got] == [reference_example({"text": (spec, [v])}) for v in values]


def test_non_text_string_values_are_written_as_their_str() -> None:
    spec = FeatureSpec("code", "string", (), "dense")
    got = serialize_examples({"code": np.array([2134, "02134", b"x"], dtype=object)}, {"code": spec}, 3)
    assert list(got) == [reference_example({"code": (spec, [v])}) for v in ["2134", "02134", b"x"]]


def test_numpy_unicode_arrays() -> None:
    spec = FeatureSpec("s", "string", (2,), "dense")
    values = np.array([["ab", "é"], ["", "xyz"]])  # dtype <U3, not object
    got = serialize_examples({"s": values}, {"s": spec}, 2)
    assert list(got) == [reference_example({"s": (spec, list(r))}) for r in values.tolist()]


@pytest.mark.parametrize("dtype", ["float32", "int64", "string"])
def test_var_len_feature_without_any_value(dtype: str) -> None:
    spec = FeatureSpec("v", dtype, (None,), "varlen")
    empty = SparseValue(
        np.zeros((0, 2), np.int64), np.zeros(0, object if dtype == "string" else dtype), np.array([3, 0])
    )
    dense = FeatureSpec("d", "int64", (), "dense")
    got = serialize_examples({"v": empty, "d": np.array([5, -5, 0])}, {"v": spec, "d": dense}, 3)
    assert list(got) == [reference_example({"d": (dense, [x])}) for x in (5, -5, 0)]

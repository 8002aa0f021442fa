"""Legacy-op rewrites: each equals its removed kernel's definition on edge values, and exports that use the
ops load and predict on current TensorFlow, with the rewrites named."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfpredict import ModelLoadError, Predictor
from tfpredict.legacy_ops import boosted_trees_bucketize, bucketize_with_input_boundaries

NAN = float("nan")
VALUES = np.array([-1e30, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 1e30, NAN], np.float32)
BOUNDARY_SETS = [
    np.array([-1.0, 0.0, 1.0, 3.0], np.float32),
    np.array([0.0], np.float32),
    np.array([1.0, 1.0, 2.0], np.float32),  # repeated boundaries
    np.array([], np.float32),
]


def lower_bound_clamped(values: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """BoostedTreesBucketize as its kernel defines it: std::lower_bound (the number of boundaries b with
    b < v; false for NaN), clamped to len - 1; 0 without boundaries."""
    if boundaries.size == 0:
        return np.zeros(values.shape[0], np.int32)
    below = (boundaries[None, :] < values.reshape(-1)[:, None]).sum(axis=1)
    return np.minimum(below, boundaries.size - 1).astype(np.int32)[: values.shape[0]]


def upper_bound(values: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """BucketizeWithInputBoundaries: boundaries cast to the input's type, then std::upper_bound (the number
    of b with !(v < b); every b for NaN)."""
    bounds = boundaries.astype(values.dtype)
    flat = values.reshape(-1)
    not_less = ~(flat[:, None] < bounds[None, :])
    return not_less.sum(axis=1).astype(np.int32).reshape(values.shape)


@pytest.mark.parametrize("boundaries", BOUNDARY_SETS, ids=lambda b: str(b.tolist()))
def test_boosted_trees_bucketize_matches_the_kernel_definition(boundaries: np.ndarray) -> None:
    got = boosted_trees_bucketize(tf.constant(VALUES), tf.constant(boundaries)).numpy()
    np.testing.assert_array_equal(got, lower_bound_clamped(VALUES, boundaries))
    assert got.dtype == np.int32
    # [n, 1] inputs, as tf.Transform feeds them, and an empty batch
    column = boosted_trees_bucketize(tf.constant(VALUES[:, None]), tf.constant(boundaries)).numpy()
    np.testing.assert_array_equal(column, lower_bound_clamped(VALUES, boundaries))
    empty = boosted_trees_bucketize(tf.zeros([0], tf.float32), tf.constant(boundaries)).numpy()
    assert empty.shape == (0,)


def test_boosted_trees_bucketize_edge_values_by_hand() -> None:
    got = boosted_trees_bucketize(tf.constant([-5.0, 0.0, 0.5, 1.0, 9.0, NAN]), tf.constant([0.0, 1.0]))
    # below the first -> 0; equal to a boundary -> that boundary's index; above the last -> clamped to 1
    assert got.numpy().tolist() == [0, 0, 1, 1, 1, 0]


@pytest.mark.parametrize("boundaries", BOUNDARY_SETS, ids=lambda b: str(b.tolist()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_bucketize_with_input_boundaries_matches_the_kernel_definition(
    boundaries: np.ndarray, dtype: type
) -> None:
    values = VALUES if np.issubdtype(dtype, np.floating) else np.array([-3, -1, 0, 1, 2, 3, 7], dtype)
    values = values.astype(dtype).reshape(-1, 1) if values.size % 2 else values.astype(dtype).reshape(-1, 2)
    got = bucketize_with_input_boundaries(tf.constant(values), tf.constant(boundaries)).numpy()
    np.testing.assert_array_equal(got, upper_bound(values, boundaries))
    assert got.dtype == np.int32 and got.shape == values.shape


def test_bucketize_with_input_boundaries_edge_values_by_hand() -> None:
    got = bucketize_with_input_boundaries(
        tf.constant([-5.0, 0.0, 0.5, 1.0, 9.0, NAN]), tf.constant([0.0, 1.0])
    )
    # a value equal to a boundary goes above it; above the last -> len; NaN -> len
    assert got.numpy().tolist() == [0, 1, 1, 2, 2, 2]
    # int input: float boundaries truncate toward zero (1.7 -> 1, -0.5 -> 0), as the kernel's conversion
    ints = bucketize_with_input_boundaries(tf.constant([-1, 0, 1, 2], tf.int64), tf.constant([-0.5, 1.7]))
    assert ints.numpy().tolist() == [0, 1, 2, 2]


# ------------------------------------------------------------------------------------------------ exports

BOUNDARIES = np.array([0.0, 10.0, 20.0], np.float32)
WEIGHTS = np.array([1.5, -2.0, 4.0], np.float32)


def _save_v1_export(path: Path, op: str) -> Path:
    """A TF1-style parsing-receiver export whose model bucketizes feature x with `op`, then looks up a
    weight per bucket and adds y: score = W[bucket(x)] + y."""
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        parsed = tf.io.parse_example(
            serialized,
            {
                "x": tf.io.FixedLenFeature([1], tf.float32),
                "y": tf.io.FixedLenFeature([1], tf.float32, [0.25]),
            },
        )
        tf.constant(BOUNDARIES, name="bucket_boundaries")
        # Bucketize stands in for the legacy op while the graph is built and saved (TF 2.21 has no kernel
        # for one and does not know the other); the saved node is then turned into the legacy op below.
        bucket = tf.raw_ops.Bucketize(input=parsed["x"][:, 0], boundaries=[0.0], name="bucketize")
        weights = tf.compat.v1.get_variable(
            "w", initializer=tf.constant(np.append(WEIGHTS, 8.0).astype(np.float32))
        )
        score = tf.gather(weights, tf.clip_by_value(bucket, 0, 3)) + parsed["y"][:, 0]
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def(
                {"examples": serialized}, {"score": score}
            )
            builder.add_meta_graph_and_variables(session, ["serve"], {"serving_default": signature})
            builder.save()
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    meta = proto.meta_graphs[0]
    (node,) = [n for n in meta.graph_def.node if n.name == "bucketize"]
    node.op = op
    node.input.append("bucket_boundaries")
    del node.attr["boundaries"]
    if op == "BoostedTreesBucketize":  # float_values[1], bucket_boundaries[1]
        del node.attr["T"]
        node.attr["num_features"].i = 1
        meta.meta_info_def.tensorflow_version = "1.15.0"
    else:
        meta.meta_info_def.tensorflow_version = "1.12.0"
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())
    return path


def _expected(x: np.ndarray, y: np.ndarray, op: str) -> np.ndarray:
    if op == "BoostedTreesBucketize":
        bucket = lower_bound_clamped(x, BOUNDARIES)
    else:
        bucket = upper_bound(x, BOUNDARIES)
    return np.append(WEIGHTS, 8.0).astype(np.float32)[np.clip(bucket, 0, 3)] + y


@pytest.mark.parametrize("op", ["BoostedTreesBucketize", "BucketizeWithInputBoundaries"])
@pytest.mark.parametrize("fast_path", [True, False])
def test_export_with_a_legacy_op_loads_and_predicts(tmp_path: Path, op: str, fast_path: bool) -> None:
    export = _save_v1_export(tmp_path / "export", op)
    x = np.array([-1.0, 0.0, 5.0, 10.0, 15.0, 20.0, 99.0, 19.999], np.float32)
    y = np.array([0.0, 1.0, 0.5, 0.25, -1.0, 2.0, 3.0, 0.0], np.float32)
    with Predictor.load(export, fast_path=fast_path) as predictor:
        assert len(predictor.rewrites) == 1 and predictor.rewrites[0].startswith(op)
        out = predictor.predict({"x": x, "y": y})["score"]
    np.testing.assert_allclose(out, _expected(x, y, op), rtol=1e-6)


def test_unknown_op_names_the_op_the_node_and_the_writer(tmp_path: Path) -> None:
    export = _save_v1_export(tmp_path / "export", "BoostedTreesBucketize")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export / "saved_model.pb").read_bytes())
    meta = proto.meta_graphs[0]
    meta.meta_info_def.tensorflow_version = "1.13.1"
    (node,) = [n for n in meta.graph_def.node if n.name == "bucketize"]
    node.op = "SomeContribOpFrom2018"
    (export / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(export)
    message = str(info.value)
    assert "'SomeContribOpFrom2018'" in message and "'bucketize'" in message and "1.13.1" in message
    assert "\n" not in message


def test_inspect_names_the_rewrites(tmp_path: Path) -> None:
    import subprocess
    import sys

    export = _save_v1_export(tmp_path / "export", "BoostedTreesBucketize")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run(
        [sys.executable, "-m", "tfpredict", "inspect", str(export)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "BoostedTreesBucketize -> LowerBound" in out

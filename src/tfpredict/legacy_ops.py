"""Rewrites of ops that current TensorFlow lacks, applied to an export's GraphDef before it is imported.

Old exports carry ops whose kernels are gone (BoostedTreesBucketize: tf.Transform's `tft.bucketize` in
TFX's TF 1.15 / 2.0 Chicago-taxi exports) or that were never in core (BucketizeWithInputBoundaries, a
tf.contrib op in TF 1.12 / 1.13 exports). Each rewrite replaces one such node by current ops of the same
semantics, built with TensorFlow's own Python API in a scratch graph and spliced in; the node keeps its name
(as an IdentityN of the new results) so every tensor name that refers to it still resolves.

The semantics are the removed kernels' definitions (tensorflow/core/kernels/boosted_trees/quantile_ops.cc,
tensorflow/contrib/boosted_trees/kernels/quantile_ops.cc), restated in each rewrite's docstring and tested
on edge values in tests/test_legacy_ops.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import node_def_pb2

from .errors import ModelLoadError


@dataclass(frozen=True)
class Rewrite:
    """One legacy op and how to build it from current ops: `build(node, inputs) -> outputs`."""

    op: str
    description: str
    build: Callable[[Any, list[Any]], list[Any]]
    input_dtypes: Callable[[Any], list[Any]]


def boosted_trees_bucketize(values: Any, boundaries: Any) -> Any:
    """BoostedTreesBucketize for one feature: for each of the first dim(0) values of `values` (flattened),
    the index of the first boundary >= value (std::lower_bound), clamped to len(boundaries) - 1; 0 when
    there are no boundaries. A NaN compares false everywhere, so it lands in bucket 0. int32, shape [dim0]."""
    flat = tf.reshape(values, [1, -1])
    index = tf.raw_ops.LowerBound(
        sorted_inputs=tf.reshape(boundaries, [1, -1]), values=flat, out_type=tf.int32
    )
    # A NaN: std::lower_bound's `b < NaN` is false for every b -> 0. LowerBound's kernel agrees, but say so.
    index = tf.where(tf.math.is_nan(flat), tf.zeros_like(index), index)
    last = tf.size(boundaries, out_type=tf.int32) - 1
    index = tf.maximum(tf.minimum(index, last), 0)
    return index[0, : tf.shape(values)[0]]


def bucketize_with_input_boundaries(values: Any, boundaries: Any) -> Any:
    """BucketizeWithInputBoundaries (tf.contrib): boundaries (float) converted to the input's type, then for
    each value the index of the first boundary > value (std::upper_bound): a value equal to a boundary goes
    above it; below the first -> 0, at or above the last -> len(boundaries); NaN -> len(boundaries).
    int32, the input's shape."""
    bounds = tf.cast(tf.reshape(boundaries, [1, -1]), values.dtype)
    flat = tf.reshape(values, [1, -1])
    index = tf.raw_ops.UpperBound(sorted_inputs=bounds, values=flat, out_type=tf.int32)
    if values.dtype.is_floating:  # std::upper_bound: `NaN < b` is false for every b -> the end
        index = tf.where(tf.math.is_nan(flat), tf.fill(tf.shape(index), tf.size(bounds)), index)
    return tf.reshape(index, tf.shape(values))


def _bucketize_pairs(node: Any, inputs: list[Any]) -> list[Any]:
    n = node.attr["num_features"].i
    return [boosted_trees_bucketize(v, b) for v, b in zip(inputs[:n], inputs[n:], strict=True)]


REWRITES: dict[str, Rewrite] = {
    r.op: r
    for r in (
        Rewrite(
            "BoostedTreesBucketize",
            "BoostedTreesBucketize -> LowerBound (no kernel in TF >= 2.12)",
            _bucketize_pairs,
            lambda node: [tf.float32] * (2 * node.attr["num_features"].i),
        ),
        Rewrite(
            "BucketizeWithInputBoundaries",
            "BucketizeWithInputBoundaries (tf.contrib) -> UpperBound",
            lambda node, inputs: [bucketize_with_input_boundaries(inputs[0], inputs[1])],
            lambda node: [tf.dtypes.as_dtype(node.attr["T"].type), tf.float32],
        ),
    )
}


def rewrite_legacy_ops(graph_def: Any, producer: str) -> list[str]:
    """Replace, in place, every node of a legacy op by current ops. Returns one line per kind of rewrite
    applied ("BoostedTreesBucketize -> LowerBound ... (3 nodes)"). An op that TensorFlow does not know and
    that no rewrite covers raises ModelLoadError naming the op, the node and the TF version of the export."""
    from tensorflow.python.framework import op_def_registry

    counts: dict[str, int] = {}
    for node in list(graph_def.node):
        rewrite = REWRITES.get(node.op)
        if rewrite is not None:
            _replace(graph_def, node, rewrite)
            counts[node.op] = counts.get(node.op, 0) + 1
        elif op_def_registry.get(node.op) is None and not _is_function(graph_def, node.op):
            raise ModelLoadError(
                f"The export uses op {node.op!r} (node {node.name!r}), which TensorFlow {tf.__version__} "
                f"does not have and tfpredict has no rewrite for; the export was written by TensorFlow "
                f"{producer or '(unknown version)'}"
            )
    return [f"{REWRITES[op].description} ({n} node{'s' if n > 1 else ''})" for op, n in counts.items()]


def _is_function(graph_def: Any, op: str) -> bool:
    return any(f.signature.name == op for f in graph_def.library.function)


def _replace(graph_def: Any, node: Any, rewrite: Rewrite) -> None:
    data_inputs = [ref for ref in node.input if not ref.startswith("^")]
    controls = [ref for ref in node.input if ref.startswith("^")]
    scratch = tf.Graph()
    with scratch.as_default():
        placeholders = [
            tf.compat.v1.placeholder(dtype, name=f"input_{i}")
            for i, dtype in enumerate(rewrite.input_dtypes(node))
        ]
        outputs = rewrite.build(node, placeholders)
        tf.raw_ops.IdentityN(input=outputs, name="result")
    prefix = node.name + "/tfpredict_rewrite/"
    by_placeholder = {p.op.name: ref for p, ref in zip(placeholders, data_inputs, strict=True)}

    def outer(ref: str) -> str:
        control = ref.startswith("^")
        name, _, index = ref.lstrip("^").partition(":")
        if name in by_placeholder:
            return ("^" + by_placeholder[name].lstrip("^").split(":")[0]) if control else by_placeholder[name]
        return ("^" if control else "") + prefix + name + (":" + index if index else "")

    spliced = []
    for scratch_node in scratch.as_graph_def().node:
        if scratch_node.name in by_placeholder:
            continue
        copy = node_def_pb2.NodeDef()
        copy.CopyFrom(scratch_node)
        del copy.input[:]
        copy.input.extend(outer(ref) for ref in scratch_node.input)
        if scratch_node.name == "result":
            copy.name = node.name
            copy.input.extend(controls)
        else:
            copy.name = prefix + scratch_node.name
        copy.device = node.device
        spliced.append(copy)
    index = list(graph_def.node).index(node)
    del graph_def.node[index]
    graph_def.node.extend(spliced)

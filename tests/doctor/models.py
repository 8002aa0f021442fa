"""The two acceptance cases of issue 5, built in a temporary directory (nothing committed):

- model-bound: 64 float inputs -> 3 x 2048 ReLU -> 1, an Estimator-style parsing receiver (tf.Example
  strings -> ParseExample) saved with the compat.v1 SavedModel builder; 20,000 CSV rows.
- input-bound: y = 2 * x on one float column, a TF2 tf.Module with a raw signature; 3,000,000 CSV rows with
  an extra string column the model never reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

WIDE_INPUTS = 64
WIDE_UNITS = 2048


def build_wide_dense(root: Path, rows: int = 20_000, seed: int = 0) -> tuple[Path, Path]:
    """(export dir, CSV) of the model-bound case."""
    import tensorflow as tf

    export = root / "wide_dense" / "1"
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(WIDE_INPUTS)]
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        spec = {n: tf.io.FixedLenFeature([1], tf.float32) for n in names}
        parsed = tf.io.parse_example(serialized, spec)
        h = tf.concat([parsed[n] for n in names], axis=1)
        width = WIDE_INPUTS
        for layer in range(3):
            w = tf.compat.v1.Variable(
                rng.normal(0, 1 / np.sqrt(width), (width, WIDE_UNITS)).astype(np.float32),
                name=f"dense_{layer}/kernel",
            )
            b = tf.compat.v1.Variable(np.zeros(WIDE_UNITS, np.float32), name=f"dense_{layer}/bias")
            h = tf.nn.relu(tf.matmul(h, w) + b)
            width = WIDE_UNITS
        w = tf.compat.v1.Variable(
            rng.normal(0, 1 / np.sqrt(width), (width, 1)).astype(np.float32), name="out/kernel"
        )
        y = tf.identity(tf.matmul(h, w), name="y")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(export))
            sig = tf.compat.v1.saved_model.predict_signature_def({"examples": serialized}, {"y": y})
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.save()
    csv = root / "wide_dense.csv"
    values = np.round(rng.normal(size=(rows, WIDE_INPUTS)), 4)
    pacsv.write_csv(pa.table({n: values[:, i] for i, n in enumerate(names)}), csv)
    return export.parent, csv


def build_one_multiply(root: Path, rows: int = 3_000_000, seed: int = 0) -> tuple[Path, Path]:
    """(export dir, CSV) of the input-bound case."""
    import tensorflow as tf

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x * 2.0}

    module = Double()
    export = root / "one_multiply" / "1"
    tf.saved_model.save(module, str(export), signatures={"serving_default": module.serve})
    rng = np.random.default_rng(seed)
    ids = pa.array(rng.integers(0, 10**9, rows))
    table = pa.table(
        {
            "x": pa.array(np.round(rng.random(rows), 4)),
            "note": pc.binary_join_element_wise("customer-", pc.cast(ids, pa.string()), "-ok", ""),
        }
    )
    csv = root / "one_multiply.csv"
    pacsv.write_csv(table, csv)
    return export.parent, csv

"""Writes TF Serving's half_plus_two test models (ported from tensorflow_serving/servables/tensorflow/
testdata/saved_model_half_plus_two.py and export_bad_half_plus_two.py), so no binary testdata is committed.

  saved_model_half_plus_two_cpu/00000123      TF1 graph (tf.compat.v1): y = 0.5x + 2 behind a tf.Example parse
  saved_model_half_plus_two_tf2_cpu/00000123  native TF2 tf.Module with the same signatures
  saved_model_half_plus_three/00000123        TF1 graph: y = 0.5x + 3
  bad_half_plus_two/00000123                  a checkpoint and meta graph, but no SavedModel: never loads

Run as a script to write them under a directory: python tests/serving/half_plus_two.py OUT_DIR
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

VERSION = "00000123"


def _feature_spec() -> dict:
    return {
        "x": tf.io.FixedLenFeature([1], dtype=tf.float32),
        "x2": tf.io.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
    }


def _signature(inputs: dict, outputs: dict, method: str):
    v1 = tf.compat.v1
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: v1.saved_model.utils.build_tensor_info(t) for k, t in inputs.items()},
        {k: v1.saved_model.utils.build_tensor_info(t) for k, t in outputs.items()},
        method,
    )


def write_tf1(export_dir: str, b: float = 2.0, assets_dir: str | None = None) -> None:
    """TF Serving's TF1 half_plus_two (half_plus_three with b=3): predict, classify and regress signatures."""
    v1 = tf.compat.v1
    c = v1.saved_model.signature_constants
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        a = v1.Variable(0.5, name="a")
        bv = v1.Variable(b, name="b")
        cv = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        parsed = v1.parse_example(serialized, _feature_spec())
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), bv), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), cv), name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        a2 = v1.Variable(0.5, name="a2")
        c2 = v1.Variable(3.0, name="c2")
        y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")

        # The asset: a file copied into the export and a variable assigned its name at load time.
        assets_dir = assets_dir or os.path.join(
            os.path.dirname(os.path.dirname(export_dir)), "original_assets"
        )
        os.makedirs(assets_dir, exist_ok=True)
        asset_path = os.path.join(assets_dir, "foo.txt")
        with open(asset_path, "w") as f:
            f.write("asset-file-contents")
        asset_tensor = tf.constant(asset_path)
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_tensor)
        filename = v1.Variable("foo.txt", name="filename_tensor", trainable=False, collections=[])
        assign_filename = filename.assign("foo.txt")

        signatures = {
            "regress_x_to_y": _signature(
                {c.REGRESS_INPUTS: serialized}, {c.REGRESS_OUTPUTS: y}, c.REGRESS_METHOD_NAME
            ),
            "regress_x_to_y2": _signature(
                {c.REGRESS_INPUTS: serialized}, {c.REGRESS_OUTPUTS: y2}, c.REGRESS_METHOD_NAME
            ),
            "regress_x2_to_y3": _signature(
                {c.REGRESS_INPUTS: x2}, {c.REGRESS_OUTPUTS: y3}, c.REGRESS_METHOD_NAME
            ),
            "classify_x_to_y": _signature(
                {c.CLASSIFY_INPUTS: serialized}, {c.CLASSIFY_OUTPUT_SCORES: y}, c.CLASSIFY_METHOD_NAME
            ),
            c.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _signature({"x": x}, {"y": y}, c.PREDICT_METHOD_NAME),
        }
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.builder.SavedModelBuilder(export_dir)
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(assign_filename),
        )
        builder.save()


class HalfPlusTwoModel(tf.Module):
    """TF Serving's native TF2 half-plus-two model."""

    def __init__(self, asset_path: str) -> None:
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(2.0, name="b")
        self.c = tf.Variable(3.0, name="c")
        self.asset = tf.saved_model.Asset(asset_path)

    def compute(self, x, inc):
        return tf.add(tf.multiply(self.a, x), inc)

    def get_serving_signatures(self) -> dict:
        return {
            "regress_x_to_y": self.regress_xy,
            "regress_x_to_y2": self.regress_xy2,
            "regress_x2_to_y3": self.regress_x2y3,
            "classify_x_to_y": self.classify_xy,
            "classify_x2_to_y3": self.classify_x2y3,
            tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: self.predict,
        }

    @tf.function(input_signature=[tf.TensorSpec(shape=[1], dtype=tf.float32)])
    def predict(self, x):
        return {"y": self.compute(x, self.b)}

    @tf.function(input_signature=[tf.TensorSpec([None], dtype=tf.string, name=tf.saved_model.REGRESS_INPUTS)])
    def regress_xy(self, serialized_proto):
        x = tf.io.parse_example(serialized_proto, _feature_spec())["x"]
        return {tf.saved_model.REGRESS_OUTPUTS: self.compute(x, self.b)}

    @tf.function(input_signature=[tf.TensorSpec([None], dtype=tf.string, name=tf.saved_model.REGRESS_INPUTS)])
    def regress_xy2(self, serialized_proto):
        x = tf.io.parse_example(serialized_proto, _feature_spec())["x"]
        return {tf.saved_model.REGRESS_OUTPUTS: self.compute(x, self.c)}

    @tf.function(
        input_signature=[tf.TensorSpec(shape=[1], dtype=tf.float32, name=tf.saved_model.REGRESS_INPUTS)]
    )
    def regress_x2y3(self, x2):
        return {tf.saved_model.REGRESS_OUTPUTS: self.compute(x2, self.c)}

    @tf.function(
        input_signature=[tf.TensorSpec([None], dtype=tf.string, name=tf.saved_model.CLASSIFY_INPUTS)]
    )
    def classify_xy(self, serialized_proto):
        x = tf.io.parse_example(serialized_proto, _feature_spec())["x"]
        return {tf.saved_model.CLASSIFY_OUTPUT_SCORES: self.compute(x, self.b)}

    @tf.function(
        input_signature=[tf.TensorSpec(shape=[1], dtype=tf.float32, name=tf.saved_model.CLASSIFY_INPUTS)]
    )
    def classify_x2y3(self, x2):
        return {tf.saved_model.CLASSIFY_OUTPUT_SCORES: self.compute(x2, self.c)}


def write_tf2(export_dir: str) -> None:
    assets_dir = os.path.join(os.path.dirname(os.path.dirname(export_dir)), "original_assets")
    os.makedirs(assets_dir, exist_ok=True)
    asset_path = os.path.join(assets_dir, "foo.txt")
    with open(asset_path, "w") as f:
        f.write("asset-file-contents")
    model = HalfPlusTwoModel(asset_path)
    tf.saved_model.save(model, export_dir, signatures=model.get_serving_signatures())


def write_bad(export_dir: str) -> None:
    """export_bad_half_plus_two.py: variables and a meta graph exported without any SavedModel."""
    v1 = tf.compat.v1
    os.makedirs(export_dir, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        a = v1.Variable(0.5)
        b = v1.Variable(2.0)
        x = v1.placeholder(tf.float32)
        tf.add(tf.multiply(a, x), b)
        sess.run(v1.global_variables_initializer())
        saver = v1.train.Saver()
        saver.export_meta_graph(filename=os.path.join(export_dir, "export.meta"))
        saver.save(sess, os.path.join(export_dir, "export"), write_meta_graph=False)


def write_all(root: str) -> dict[str, str]:
    """Write every model under root; returns {name: base path}."""
    paths = {
        "saved_model_half_plus_two_cpu": os.path.join(root, "saved_model_half_plus_two_cpu"),
        "saved_model_half_plus_two_tf2_cpu": os.path.join(root, "saved_model_half_plus_two_tf2_cpu"),
        "saved_model_half_plus_three": os.path.join(root, "saved_model_half_plus_three"),
        "bad_half_plus_two": os.path.join(root, "bad_half_plus_two"),
    }
    write_tf1(os.path.join(paths["saved_model_half_plus_two_cpu"], VERSION))
    write_tf1(os.path.join(paths["saved_model_half_plus_three"], VERSION), b=3.0)
    write_tf2(os.path.join(paths["saved_model_half_plus_two_tf2_cpu"], VERSION))
    write_bad(os.path.join(paths["bad_half_plus_two"], VERSION))
    return paths


if __name__ == "__main__":
    print(write_all(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tf_serving_testdata"))

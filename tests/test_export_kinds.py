"""Export shapes met in the wild: tf.Examples parsed inside a tf.function (TFX native Keras, TF2 modules),
evaluation-only exports and explicit tag sets, signatures that mislabel their input's dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfpredict import ModelLoadError, Predictor

ROWS = {
    "f0": [1.0, 2.0, -0.5],
    "f1": [0.0, 1.0, 4.0],
    "city": ["ab", None, "xyz"],
    "n": [3, 0, 7],
}


class ParsingModule(tf.Module):
    """Parses tf.Examples inside its serving function, as TFX's serve_tf_examples_fn does, with a dense
    feature that has a default, a var-len string and a dense int64."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable([[1.5], [-2.0]])
        self.b = tf.Variable(0.25)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._score(serialized)

    @tf.function
    def _score(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        spec = {
            "f0": tf.io.FixedLenFeature([], tf.float32),
            "f1": tf.io.FixedLenFeature([], tf.float32, default_value=9.0),
            "n": tf.io.FixedLenFeature([], tf.int64),
            "city": tf.io.VarLenFeature(tf.string),
        }
        parsed = tf.io.parse_example(serialized, spec)
        x = tf.stack([parsed["f0"], parsed["f1"]], axis=1)
        lengths = tf.sparse.to_dense(tf.sparse.map_values(tf.strings.length, parsed["city"]), default_value=0)
        score = tf.matmul(x, self.w)[:, 0] + self.b + tf.cast(tf.reduce_sum(lengths, axis=1), tf.float32)
        return {"score": score * tf.cast(parsed["n"], tf.float32), "n": parsed["n"]}


def _example(row: dict) -> bytes:
    feature = {
        "f0": tf.train.Feature(float_list=tf.train.FloatList(value=[row["f0"]])),
        "f1": tf.train.Feature(float_list=tf.train.FloatList(value=[row["f1"]])),
        "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[row["n"]])),
    }
    if row["city"] is not None:
        feature["city"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["city"].encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def tf2_parsing_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("tf2_parsing") / "1"
    module = ParsingModule()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    rows = [dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)]
    reference = tf.saved_model.load(str(path)).signatures["serving_default"](
        examples=tf.constant([_example(r) for r in rows])
    )
    return path, {k: v.numpy() for k, v in reference.items()}


@pytest.mark.parametrize("fast_path", [True, False])
def test_parse_op_inside_a_tf_function_is_found(tf2_parsing_export, fast_path: bool) -> None:
    path, reference = tf2_parsing_export
    with Predictor.load(path, fast_path=fast_path) as predictor:
        assert set(predictor.inputs) == {"f0", "f1", "n", "city"}
        assert predictor.inputs["f1"].default == 9.0 and predictor.inputs["city"].kind == "varlen"
        assert predictor.path == ("features" if fast_path else "examples")
        assert "inside a tf.function" in predictor.path_reason_for("serving_default") or not fast_path
        got = predictor.predict(ROWS)
    np.testing.assert_allclose(got["score"], reference["score"], rtol=1e-6)
    np.testing.assert_array_equal(got["n"], reference["n"])


def test_signature_examples_input_still_runs_as_exported(tf2_parsing_export) -> None:
    path, reference = tf2_parsing_export
    rows = [dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)]
    with Predictor.load(path) as predictor:
        got = predictor.run({"examples": np.array([_example(r) for r in rows], dtype=object)})
    np.testing.assert_allclose(got["score"], reference["score"], rtol=1e-6)


def _v1_export(path: Path, tags: list[str], declared_dtype: tf.DType | None = None) -> Path:
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        y = tf.identity(parsed["x"] * 0.5 + 3.0, name="y")
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.regression_signature_def(serialized, y)
            builder.add_meta_graph_and_variables(session, tags, {"serving_default": signature})
            builder.save()
    if declared_dtype is not None:  # as TF Serving's half_plus_three: the signature says DT_FLOAT
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        proto.meta_graphs[0].signature_def["serving_default"].inputs[
            "inputs"
        ].dtype = declared_dtype.as_datatype_enum
        (path / "saved_model.pb").write_bytes(proto.SerializeToString())
    return path


def test_evaluation_only_export_says_what_it_is(tmp_path: Path) -> None:
    export = _v1_export(tmp_path / "eval_export", ["eval"])
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(export)
    message = str(info.value)
    assert "only the tag set [eval] (a TFMA evaluation export)" in message
    assert "needs a serving export (tag 'serve')" in message and "--tags" in message
    with Predictor.load(export, tags=["eval"]) as predictor:  # asked for explicitly: it loads
        assert predictor.tags == ["eval"]
        np.testing.assert_allclose(predictor.predict({"x": [2.0]})["outputs"], [[4.0]])


def test_unknown_tag_set_names_the_ones_there(tmp_path: Path) -> None:
    export = _v1_export(tmp_path / "export", ["serve"])
    with pytest.raises(ModelLoadError, match=r"has no tag set \[gpu, serve\]; it has \[serve\]"):
        Predictor.load(export, tags=["serve", "gpu"])


def test_graph_dtype_wins_over_a_mislabelled_signature(tmp_path: Path) -> None:
    export = _v1_export(tmp_path / "export", ["serve"], declared_dtype=tf.float32)
    with Predictor.load(export) as predictor:
        assert predictor.signatures["serving_default"].inputs["inputs"].dtype == "string"
        assert predictor.path == "features"
        np.testing.assert_allclose(predictor.predict({"x": [2.0, -4.0]})["outputs"], [[4.0], [1.0]])


def _csv_line_export(path: Path) -> Path:
    """Cloud ML Engine's "CSV" serving input: whole lines in, DecodeCSV in the graph (x: float with a
    default, city: string, n: int64 required)."""
    graph = tf.Graph()
    with graph.as_default():
        lines = tf.compat.v1.placeholder(tf.string, [None], name="csv_row")
        x, city, n = tf.io.decode_csv(
            tf.expand_dims(lines, -1), record_defaults=[[0.5], [""], tf.constant([], tf.int64)]
        )
        score = x * 2.0 + tf.cast(tf.strings.length(city), tf.float32) + tf.cast(n, tf.float32) * 10.0
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"csv_row": lines}, {"score": score})
            builder.add_meta_graph_and_variables(session, ["serve"], {"serving_default": signature})
            builder.save()
    return path


@pytest.mark.parametrize("header", [False, True])
def test_csv_line_receiver_predicts_from_a_csv_file(tmp_path: Path, header: bool) -> None:
    import json
    import subprocess
    import sys

    export = _csv_line_export(tmp_path / "export")
    with Predictor.load(export) as predictor:
        assert predictor.csv_spec_for() is not None and predictor.csv_spec_for().dtypes == (
            "float32",
            "string",
            "int64",
        )
        assert "DecodeCSV" in predictor.path_reason_for("serving_default")
    data = tmp_path / "rows.csv"
    data.write_text(("x,city,n\n" if header else "") + '1.5,ab,3\n,"x,y",1\n-2,,0\n')
    out = tmp_path / "out.jsonl"
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "tfpredict", "predict", str(export), str(data), "-o", str(out), "-q"]
    subprocess.run(cmd, check=True, env=env)
    scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    np.testing.assert_allclose(np.ravel(scores), [3.0 + 2 + 30, 1.0 + 3 + 10, -4.0 + 0 + 0])

    data.write_text("1.5,ab,3\n2.5,cd\n")  # the second line lacks a field
    out.unlink()
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and not out.exists()
    assert "rows.csv, data line 2" in bad.stderr and "DecodeCSV" in bad.stderr
    assert "Traceback" not in bad.stderr

"""Models whose loading the test controls, made at test time with TensorFlow:

- a "gated" model: its serving signature waits (sleeping 50 ms at a time in a tf.data SleepDataset, no busy
  loop) until a gate file exists; its warm-up request names the gate, so the version stays LOADING until
  the test creates the file (`Gate.open()`). Requests naming an existing file answer at once;
- a broken model: a version directory whose saved_model.pb is not a SavedModel.

Both are real: the server loads a real export and replays a real PredictionLog warm-up record."""

from __future__ import annotations

from pathlib import Path

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


class Gate:
    """A file whose absence holds a gated model's warm-up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> None:
        self.path.write_text("open")


def export_gated(version_dir: Path, warmup_paths: list[str] | tuple[str, ...] = ()) -> Path:
    """serving_default takes `path` (strings), waits until the first one exists, and answers `waited`
    (how many naps it took) for each row. Its warm-up requests name `warmup_paths`, one record each."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    class Gated(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="path")])
        def serve(self, path: tf.Tensor) -> dict[str, tf.Tensor]:
            def closed(naps: tf.Tensor) -> tf.Tensor:
                return tf.size(tf.io.matching_files(path[0])) == 0

            def nap(naps: tf.Tensor) -> list[tf.Tensor]:
                sleep = tf.raw_ops.SleepDataset(
                    input_dataset=tf.data.experimental.to_variant(tf.data.Dataset.range(1)),
                    sleep_microseconds=50_000,
                    output_types=[tf.int64],
                    output_shapes=[[]],
                )
                slept = tf.data.experimental.from_variant(sleep, tf.TensorSpec([], tf.int64))
                return [naps + 1 + slept.reduce(tf.constant(0, tf.int64), lambda a, b: a + b)]

            naps = tf.while_loop(closed, nap, [tf.constant(0, tf.int64)])[0]
            return {"waited": naps + tf.zeros_like(tf.strings.length(path), tf.int64)}

    module = Gated()
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve})
    if warmup_paths:
        (version_dir / WARMUP).parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(version_dir / WARMUP)) as writer:
            for p in warmup_paths:
                log = prediction_log_pb2.PredictionLog()
                request: predict_pb2.PredictRequest = log.predict_log.request
                request.model_spec.name = "gated"
                request.inputs["path"].CopyFrom(tf.make_tensor_proto([p]))
                writer.write(log.SerializeToString())
    return version_dir


def gated_model(root: Path, name: str = "gated") -> tuple[Path, Gate]:
    """A base path whose version 1 stays LOADING until `gate.open()`."""
    root.mkdir(parents=True, exist_ok=True)
    gate = Gate(root / f"{name}.gate")
    export_gated(root / name / "1", [str(gate.path)])
    return root / name, gate


def broken_model(root: Path, name: str = "broken") -> Path:
    """A base path whose only version is not a SavedModel."""
    version = root / name / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"this is not a SavedModel protocol buffer")
    return root / name

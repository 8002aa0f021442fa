"""TF2 SavedModels a graph session cannot restore still predict (through TF2 functions)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from tfpredict import Predictor

# A Keras model saved under a MirroredStrategy keeps its variables' values only in the object graph.
# Built in a child process: logical CPU devices must be configured before TensorFlow starts.
BUILD = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1"))
    with strategy.scope():
        model = tf.keras.models.Sequential()
        model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
        model.add(tf.keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones"))
    spec = tf.TensorSpec([None, 1], tf.float32, name="x")
    serve = tf.function(lambda x: {"y": model(x)}).get_concrete_function(spec)
    tf.saved_model.save(model, sys.argv[1] + "/7", signatures=serve)
    """
)


def test_distributed_keras_model_predicts(tmp_path) -> None:
    subprocess.run([sys.executable, "-c", BUILD, str(tmp_path)], check=True, capture_output=True)
    with Predictor.load(tmp_path) as predictor:
        assert predictor.version == 7
        assert predictor.path == "tensors"
        got = predictor.predict({"x": np.array([[1.0], [2.5]], np.float32)})
        np.testing.assert_allclose(got["y"], [[2.0], [3.5]])
        np.testing.assert_allclose(predictor.run({"x": np.array([[4.0]], np.float32)})["y"], [[5.0]])

"""Writes every model the serving tests use under one directory (run in a subprocess by conftest)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from half_plus_two import VERSION, write_all  # noqa: E402


def write_tf_saved_model_save(base: str) -> None:
    """test_tf_saved_model_save: y = v1 * v2 * x with v1=3, v2=2."""
    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    to_save = root.f.get_concrete_function(tf.TensorSpec(None, tf.float32))
    tf.saved_model.save(root, os.path.join(base, VERSION), to_save)


def write_multiple_signatures(base: str) -> None:
    """test_tf_saved_model_save_multiple_signatures: serving_default -> 1, custom_signature_key -> 2."""
    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(
        root,
        os.path.join(base, VERSION),
        signatures={tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: root.f, "custom_signature_key": root.g},
    )


def write_keras_sequential(base: str) -> None:
    """test_sequential_keras_saved_model_save: an identity Keras model with input x, output y."""
    model = tf.keras.models.Sequential()
    model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
    model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
    # Keras 3 names the serving input "inputs" where the tf-keras of TF Serving's test named it after the
    # Input layer ("x"); an explicit signature keeps the model TF Serving's test expects.
    serve = tf.function(lambda x: {"y": model(x)}).get_concrete_function(
        tf.TensorSpec([None, 1], tf.float32, name="x")
    )
    tf.saved_model.save(model, os.path.join(base, VERSION), signatures=serve)


def write_distrat_keras_sequential(base: str) -> None:
    """test_distrat_sequential_keras_saved_model_save: Dense(1, ones) under a MirroredStrategy on 2 CPUs."""
    strategy = tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1"))
    with strategy.scope():
        model = tf.keras.models.Sequential()
        model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
        model.add(tf.keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"))
        model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
    serve = tf.function(lambda x: {"y": model(x)}).get_concrete_function(
        tf.TensorSpec([None, 1], tf.float32, name="x")
    )
    tf.saved_model.save(model, os.path.join(base, "00000123"), signatures=serve)


if __name__ == "__main__":
    # SetVirtualCpus(2) of TF Serving's test base: before anything else touches the devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    root = sys.argv[1]
    write_distrat_keras_sequential(os.path.join(root, "distrat_keras_sequential_saved_model_save"))
    write_all(root)
    write_tf_saved_model_save(os.path.join(root, "tf_saved_model_save"))
    write_multiple_signatures(os.path.join(root, "tf_saved_model_save_multiple_signatures"))
    write_keras_sequential(os.path.join(root, "keras_sequential_saved_model_save"))

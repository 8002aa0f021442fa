"""Warm-up: replay a version's assets.extra/tf_serving_warmup_requests before it serves (TF Serving's
--enable_model_warmup), straight on its Predictor: the event loop and the batchers are not running yet."""

from __future__ import annotations

import os
from typing import Any

from . import proto_codec
from .inference import signature_of
from .models import Servable
from .status import ServingError

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


def warmup(servable: Servable, iterations: int = 1) -> int:
    """Replay the version's PredictionLog records (up to MAX_WARMUP_RECORDS), each `iterations` times
    (--num_request_iterations_for_warmup; below 1: once); returns how many calls were replayed."""
    path = servable.path / WARMUP_FILE
    if not path.is_file():
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        if count >= MAX_WARMUP_RECORDS:
            break
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        for _ in range(max(1, iterations)):
            _replay(servable, entry, path)
        count += 1
    return count * max(1, iterations)


def _replay(servable: Servable, entry: Any, path: Any) -> None:
    """One warm-up record, straight on the version's Predictor."""
    kind = entry.WhichOneof("log_type")
    p = servable.predictor
    if kind == "predict_log":
        req = entry.predict_log.request
        sig = signature_of(servable, req.model_spec.signature_name)
        inputs = {k: proto_codec.to_ndarray(v, k) for k, v in req.inputs.items()}
        p.run(inputs, signature=sig.name, outputs=list(req.output_filter) or None)
    elif kind in ("classify_log", "regress_log", "multi_inference_log"):
        req = getattr(entry, kind).request
        examples = proto_codec.serialized_examples(req.input)
        tasks = req.tasks if kind == "multi_inference_log" else [req]
        for task in tasks:
            sig = signature_of(servable, task.model_spec.signature_name)
            (key,) = sig.inputs
            p.run({key: examples}, signature=sig.name)
    else:
        raise ServingError("INVALID_ARGUMENT", f"Unsupported warm-up log type {kind!r} in {path}")

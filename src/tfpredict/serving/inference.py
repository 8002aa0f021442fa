"""The request path shared by REST and gRPC: find the servable and signature, batch, predict, unbatch.

One small class per kind of request (Predict, Classify, Regress), each with the same steps:
`prepare` (what to feed and how it may be batched) -> `InferenceService.run` (the batcher, or a worker
thread when batching is off) -> `finish` (check and shape the outputs). The front ends only decode
their protocol into these calls and encode what comes back.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import json_codec, proto_codec
from .models import CallKey, ModelManager, Servable
from .status import ServingError, invalid

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


class Spec(NamedTuple):
    """Which model a request is for (a ModelSpec): name, and a version or a label, and a signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = ""


@dataclass
class Call:
    """What to run: feed tensors (kind "tensors") or feature rows (kind "rows"), with its batching key."""

    key: CallKey
    data: Any
    size: int | None  # rows, or None when the inputs have no common batch dimension (never batched)


def signature_of(servable: Servable, name: str) -> Any:
    """The SignatureInfo a request names ("" = serving_default), or INVALID_ARGUMENT."""
    sig_name = name or DEFAULT_SIGNATURE
    sig = servable.predictor.signatures.get(sig_name)
    if sig is None:
        raise invalid(f'Serving signature name: "{sig_name}" not found in signature def')
    return sig


def tensors_call(signature: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...] = ()) -> Call:
    if len(inputs) == 1:  # the usual case (serialized tf.Examples): no sets, no sorting
        ((name, v),) = inputs.items()
        key = ("tensors", signature, outputs, ((name, v.dtype.str, v.shape[1:]),))
        return Call(key, inputs, v.shape[0] if v.ndim else None)
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    size = sizes.pop() if len(sizes) == 1 else None
    layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
    return Call(("tensors", signature, outputs, layout), inputs, size)


def rows_call(signature: str, rows: list[dict[str, Any]], outputs: tuple[str, ...] = ()) -> Call:
    return Call(("rows", signature, outputs), rows, len(rows))


class Predict:
    @staticmethod
    def prepare(
        servable: Servable, sig: Any, inputs: dict[str, np.ndarray], output_filter: list[str]
    ) -> Call:
        missing = sorted(set(sig.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(sig.inputs))
        if missing or extra:
            raise invalid(
                f"Request inputs do not match required inputs for model `{servable.name}`. "
                f"Send extra: {{{', '.join(extra)}}}. Missing but required: {{{', '.join(missing)}}}."
            )
        outputs = _output_filter(sig, output_filter)
        return tensors_call(sig.name, inputs, outputs)

    @staticmethod
    def prepare_rows(sig: Any, rows: list[dict[str, Any]], output_filter: list[str]) -> Call:
        return rows_call(sig.name, rows, _output_filter(sig, output_filter))


def _output_filter(sig: Any, output_filter: list[str]) -> tuple[str, ...]:
    seen = set()
    for name in output_filter:
        if name not in sig.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {name} Outputs expected to be in the set "
                f"{{{','.join(sorted(sig.outputs))}}}."
            )
        if name in seen:
            raise invalid(f"duplicate output tensor alias: {name}")
        seen.add(name)
    return tuple(output_filter)


def uses_feature_rows(servable: Servable, sig: Any) -> bool:
    """True when a signature starts with a tf.Example parse the core can skip (or build examples for)."""
    try:
        return servable.predictor.path_for(sig.name) in ("features", "examples")
    except Exception:
        return False


class Classify:
    OUTPUTS = ("classes", "scores")

    @staticmethod
    def check(sig: Any) -> None:
        if len(sig.inputs) != 1:
            raise invalid("Expected one input Tensor.")
        if not any(k in sig.outputs for k in Classify.OUTPUTS):
            raise invalid(
                f'Expected classification signature outputs to contain at least one of "classes" or '
                f'"scores". Signature {sig.name!r} has: {", ".join(sorted(sig.outputs))}'
            )

    @staticmethod
    def prepare(
        servable: Servable, sig: Any, rows: list[dict[str, Any]] | None, serialized: np.ndarray | None
    ) -> Call:
        outputs = servable.memo(("classify", sig.name), lambda: Classify._outputs(sig))
        return _examples_call(servable, sig, outputs, rows, serialized)

    @staticmethod
    def _outputs(sig: Any) -> tuple[str, ...]:
        Classify.check(sig)
        return tuple(k for k in Classify.OUTPUTS if k in sig.outputs)

    @staticmethod
    def finish(outputs: dict[str, np.ndarray], n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(classes [n, k] of bytes or None, scores [n, k] float32 or None), validated as TF Serving does."""
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for what, t in (("classes", classes), ("scores", scores)):
            if t is None:
                continue
            if t.ndim == 1:
                t = t.reshape(-1, 1)
            if t.ndim != 2:
                raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {list(t.shape)}")
            if t.shape[0] != n:
                raise invalid(f"Expected {what} output batch size of {n}. Got: {t.shape[0]}")
            if what == "classes":
                if t.dtype.kind not in "OSU":
                    raise invalid(f"Expected classes Tensor of DT_STRING. Got: {t.dtype}")
                classes = t
            else:
                if t.dtype.kind != "f":
                    raise invalid(f"Expected scores Tensor of DT_FLOAT. Got: {t.dtype}")
                scores = t.astype(np.float32, copy=False)
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        return classes, scores


class Regress:
    @staticmethod
    def check(sig: Any) -> None:
        if len(sig.inputs) != 1:
            raise invalid("Expected one input Tensor.")
        if "outputs" not in sig.outputs:
            raise invalid(
                f'Expected regression signature to have an "outputs" output; {sig.name!r} has: '
                f"{', '.join(sorted(sig.outputs))}"
            )

    @staticmethod
    def prepare(
        servable: Servable, sig: Any, rows: list[dict[str, Any]] | None, serialized: np.ndarray | None
    ) -> Call:
        servable.memo(("regress", sig.name), lambda: Regress.check(sig))
        return _examples_call(servable, sig, ("outputs",), rows, serialized)

    @staticmethod
    def finish(outputs: dict[str, np.ndarray], n: int) -> np.ndarray:
        t = outputs["outputs"]
        if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
            raise invalid(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                f"{list(t.shape)}"
            )
        if t.shape[0] != n:
            raise invalid(f"Input batch size did not match output batch size: {n} vs. {t.shape[0]}")
        if t.dtype.kind != "f":
            raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {t.dtype}")
        return t.reshape(-1).astype(np.float32, copy=False)


def _examples_call(
    servable: Servable,
    sig: Any,
    outputs: tuple[str, ...],
    rows: list[dict[str, Any]] | None,
    serialized: np.ndarray | None,
) -> Call:
    if rows is not None and uses_feature_rows(servable, sig):
        return rows_call(sig.name, rows, outputs)  # the fast path: no tf.Example is built or parsed
    if serialized is None:
        assert rows is not None
        serialized = json_codec.rows_to_examples(rows)
    (input_key,) = sig.inputs
    if sig.inputs[input_key].dtype != "string":
        raise invalid(
            f"Signature {sig.name!r} takes {sig.inputs[input_key].dtype} input {input_key!r}, not serialized "
            "tf.Examples; use :predict for it"
        )
    return tensors_call(sig.name, {input_key: serialized}, outputs)


class InferenceService:
    """Runs calls on servables: through the servable's batcher when batching is on, else on a thread pool."""

    def __init__(self, manager: ModelManager, threads: int = 16) -> None:
        self.manager = manager
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's one event loop

    def servable(self, spec: Spec) -> Servable:
        return self.manager.get(spec.name, spec.version, spec.label)

    def run(self, servable: Servable, call: Call) -> asyncio.Future[dict[str, np.ndarray]]:
        """The outputs, to await: from the servable's batcher, or a worker thread when batching is off.
        (A plain function returning the future: one coroutine less on every request's path.)"""
        loop = self._loop
        if loop is None:  # once: asyncio.get_running_loop() makes a syscall (getpid) every time
            loop = self._loop = asyncio.get_running_loop()
        if servable.batcher is not None and call.size:
            return servable.batcher.submit(call.key, call.data, call.size, loop)  # type: ignore[no-any-return]
        return loop.run_in_executor(self.executor, servable.execute, call.key, call.data)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------- warm-up
def warmup(servable: Servable) -> int:
    """Replay assets.extra/tf_serving_warmup_requests (PredictionLog records) before serving a version."""
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
        kind = entry.WhichOneof("log_type")
        p = servable.predictor
        if kind == "predict_log":
            req = entry.predict_log.request
            sig = signature_of(servable, req.model_spec.signature_name)
            inputs = {k: proto_codec.to_ndarray(v, k) for k, v in req.inputs.items()}
            p.run(inputs, signature=sig.name, outputs=list(req.output_filter) or None)
        elif kind in ("classify_log", "regress_log"):
            req = getattr(entry, kind).request
            sig = signature_of(servable, req.model_spec.signature_name)
            (key,) = sig.inputs
            p.run({key: proto_codec.serialized_examples(req.input)}, signature=sig.name)
        elif kind == "multi_inference_log":
            req = entry.multi_inference_log.request
            examples = proto_codec.serialized_examples(req.input)
            for task in req.tasks:
                sig = signature_of(servable, task.model_spec.signature_name)
                (key,) = sig.inputs
                p.run({key: examples}, signature=sig.name)
        else:
            raise ServingError("INVALID_ARGUMENT", f"Unsupported warm-up log type {kind!r} in {path}")
        count += 1
    return count

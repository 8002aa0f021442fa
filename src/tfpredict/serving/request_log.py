"""Sampled request logging: a model config's `logging_config` (LogCollectorConfig + SamplingConfig).

TF Serving's open-source build has the config but no collector ("No request-logger-creator provided").
Here a sampled request's path appends a LogEntry to a bounded queue (never blocking: when it is full the
entry is dropped and counted); one writer thread wakes every FLUSH_SECONDS and turns what is queued into
lines of one of two formats:
  - "tfrecord" (the default): TFRecord files of tensorflow_serving.apis.prediction_log_pb2.PredictionLog,
    TF Serving's own message, which TFX / TFMA read. Like TF Serving, only answered (OK) requests: the
    message has no field for an error or a latency.
  - "jsonl" (LogCollectorConfig.type "jsonl", or a filename_prefix ending in ".jsonl"): one JSON object a
    line with model, version, signature, kind, status, message, latency_us, timestamp, inputs, outputs;
    failed requests too.
Files are `{filename_prefix}.{start time}-{pid}.{n:05d}.tfrecord|.jsonl`, a new one past
--request_log_max_file_bytes.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import orjson

from ..errors import UsageError
from .metrics import Metrics
from .status import as_serving_error

log = logging.getLogger(__name__)

QUEUE_ENTRIES = 4096  # sampled requests waiting for the writer; beyond it they are dropped
# The writer drains the queue on a timer, not on each entry: woken per entry (a futex wake, then a GIL
# handoff with the event loop, then a flush), one logged request in ten cost the server 63 us of CPU per
# request (630 us per entry, 30 us of it the entry's own work); see benchmarks/serve.py --request_log.
FLUSH_SECONDS = 0.05


class LogEntry(NamedTuple):
    """One sampled request as its path saw it; turned into a log line by the writer thread."""

    kind: str  # "predict" | "classify" | "regress"
    model: str
    version: int | None
    signature: str
    sig: Any  # the SignatureInfo (its input names), or None when the request failed before it
    call: Any  # the inference Call (key, data), or None when the request failed before it
    result: Any  # the kind's answer: outputs, a Classification, regression values; None on error
    status: str
    message: str
    latency_us: float
    timestamp: float

    @classmethod
    def answered(cls, kind: str, answer: Any, sig: Any, call: Any, start: float) -> LogEntry:
        micros = (time.perf_counter() - start) * 1e6
        return cls(
            kind, answer.model, answer.version, answer.signature, sig, call, answer.result, "OK", "",
            micros, time.time(),
        )  # fmt: skip

    @classmethod
    def failed(cls, kind: str, spec: Any, sig: Any, call: Any, exc: Exception, start: float) -> LogEntry:
        err = as_serving_error(exc)
        micros = (time.perf_counter() - start) * 1e6
        signature = sig.name if sig is not None else spec.signature
        return cls(
            kind, spec.name, spec.version, signature, sig, call, None, err.code, err.message, micros,
            time.time(),
        )  # fmt: skip


class RequestLog:
    """The sampling decision (on the request path) and the writer thread (off it), for every model with a
    logging_config."""

    def __init__(self, configs: Iterable[Any], metrics: Metrics, max_file_bytes: int) -> None:
        """`configs`: ModelConfigs; those with `.logging` are sampled."""
        self._metrics = metrics
        self._rates: dict[str, float] = {}
        self._files: dict[str, LogFile] = {}
        by_prefix: dict[tuple[str, str], LogFile] = {}
        for c in configs:
            if c.logging is None:
                continue
            where = (c.logging.filename_prefix, c.logging.type)
            if where not in by_prefix:  # models sharing a prefix share its files
                by_prefix[where] = LogFile(c.logging.filename_prefix, c.logging.type, max_file_bytes)
            self._rates[c.name] = c.logging.sampling_rate
            self._files[c.name] = by_prefix[where]
        self._queue: deque[LogEntry] = deque()  # appended on the event loop, drained by the writer
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="request-log", daemon=True)
        self._thread.start()

    @classmethod
    def for_models(cls, configs: list[Any], metrics: Metrics, max_file_bytes: int) -> RequestLog | None:
        """A RequestLog when some model has a logging_config, else None (nothing on the request path)."""
        if not any(c.logging is not None for c in configs):
            return None
        if max_file_bytes < 1:
            raise UsageError(f"--request_log_max_file_bytes must be >= 1, got {max_file_bytes}")
        return cls(configs, metrics, max_file_bytes)

    def logs(self, model: str) -> bool:
        """Does the model have a logging_config (its requests may be sampled)?"""
        return model in self._rates

    def sampled(self, model: str) -> bool:
        rate = self._rates.get(model)
        return rate is not None and random.random() < rate

    def record(self, entry: LogEntry) -> None:
        """Queue an entry for the writer; never blocks or wakes a thread (a full queue drops it, counted)."""
        if len(self._queue) >= QUEUE_ENTRIES:
            self._metrics.request_log.inc(entry.model, "dropped")
            return
        self._queue.append(entry)

    def close(self) -> None:
        """Write what is queued, then close the files."""
        self._closing.set()
        self._thread.join(timeout=60)

    def _write_loop(self) -> None:
        while True:
            closing = self._closing.wait(FLUSH_SECONDS)
            self._drain()
            if closing:
                for f in set(self._files.values()):
                    f.close()
                return

    def _drain(self) -> None:
        touched = set()
        while self._queue:
            entry = self._queue.popleft()
            f = self._files[entry.model]
            try:
                written = f.write(entry)
            except Exception:  # one bad entry (or a full disk) must not stop the logging
                log.exception("Could not write a request log entry of model %s", entry.model)
                self._metrics.request_log.inc(entry.model, "failed")
                continue
            if written:
                self._metrics.request_log.inc(entry.model, "written")
            touched.add(f)
        for f in touched:
            f.flush()


class LogFile:
    """The files of one filename_prefix: entries as PredictionLog TFRecords or JSON Lines, rotated."""

    def __init__(self, prefix: str, kind: str, max_bytes: int) -> None:
        self.kind = kind
        self.max_bytes = max_bytes
        self.extension = ".jsonl" if kind == "jsonl" else ".tfrecord"
        base = prefix[: -len(".jsonl")] if prefix.endswith(".jsonl") else prefix
        self.base = f"{base}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.index = -1
        self.size = 0
        self.paths: list[str] = []
        self._writer: Any = None
        self._open_next()  # a directory that cannot be written to fails at start-up, not on a request

    def _open_next(self) -> None:
        self.close()
        self.index += 1
        path = f"{self.base}.{self.index:05d}{self.extension}"
        try:
            if self.kind == "jsonl":
                self._writer = open(path, "ab")
            else:
                import tensorflow as tf

                self._writer = tf.io.TFRecordWriter(path)
        except Exception as exc:  # OSError, or TensorFlow's NotFoundError / PermissionDeniedError
            reason = getattr(exc, "strerror", None) or getattr(exc, "message", None) or exc
            raise UsageError(f"Could not open request log file {path}: {reason}") from exc
        self.paths.append(path)
        self.size = 0

    def write(self, entry: LogEntry) -> bool:
        """Write one entry; False when the format has no place for it (a failed request in TFRecord)."""
        if self.kind == "jsonl":
            data = jsonl_line(entry)
            self._writer.write(data)
        elif entry.status != "OK":
            return False
        else:
            data = prediction_log(entry).SerializeToString()
            self._writer.write(data)
            self.size += 16  # TFRecord framing: length, and two CRCs
        self.size += len(data)
        if self.size >= self.max_bytes:
            self._open_next()
        return True

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ------------------------------------------------------------------------------------------- formats
def entry_inputs(entry: LogEntry) -> dict[str, np.ndarray]:
    """The call's input tensors; feature rows (REST JSON) as the serialized tf.Examples the signature
    takes, as TF Serving would have logged them."""
    call = entry.call
    if call.key[0] != "rows":
        return call.data  # type: ignore[no-any-return]
    from .json_codec import rows_to_examples

    (name,) = entry.sig.inputs if len(entry.sig.inputs) == 1 else ("examples",)
    return {name: rows_to_examples(call.data)}


def prediction_log(entry: LogEntry) -> Any:
    """A PredictionLog of an answered request: metadata, and its kind's request and response."""
    from tensorflow_serving.apis import prediction_log_pb2

    from . import proto_codec

    out = prediction_log_pb2.PredictionLog()
    meta = out.log_metadata
    _spec(meta.model_spec, entry)
    meta.timestamp_secs = int(entry.timestamp)
    inputs = entry_inputs(entry)
    if entry.kind == "predict":
        request, response = out.predict_log.request, out.predict_log.response
        _spec(request.model_spec, entry)
        for name, arr in inputs.items():
            proto_codec.from_ndarray(arr, request.inputs[name])
        request.output_filter.extend(entry.call.key[2])
        _spec(response.model_spec, entry)
        for name, arr in entry.result.items():
            proto_codec.from_ndarray(arr, response.outputs[name])
        return out
    part = out.classify_log if entry.kind == "classify" else out.regress_log
    _spec(part.request.model_spec, entry)
    examples = part.request.input.example_list.examples
    for serialized in next(iter(inputs.values())).reshape(-1):
        examples.add().ParseFromString(serialized)
    _spec(part.response.model_spec, entry)
    if entry.kind == "classify":
        _classifications(part.response.result.classifications, entry.result)
    else:
        for v in entry.result.tolist():
            part.response.result.regressions.add().value = v
    return out


def _spec(out: Any, entry: LogEntry) -> None:
    out.name = entry.model
    if entry.version is not None:
        out.version.value = entry.version
    out.signature_name = entry.signature


def _classifications(out: Any, result: Any) -> None:
    rows = result.labels if result.labels is not None else result.scores
    for i in range(len(rows)):
        c = out.add()
        for j in range(result.width):
            cl = c.classes.add()
            if result.labels is not None:
                cl.label = result.labels[i][j]
            if result.scores is not None:
                cl.score = result.scores[i][j]


def jsonl_line(entry: LogEntry) -> bytes:
    """One JSON object (and a newline): bytes values as {"b64": ...}, as in TF Serving's REST API."""
    doc: dict[str, Any] = {
        "timestamp": entry.timestamp,
        "model": entry.model,
        "version": entry.version,
        "signature": entry.signature,
        "kind": entry.kind,
        "status": entry.status,
        "latency_us": round(entry.latency_us, 1),
    }
    if entry.message:
        doc["message"] = entry.message
    if entry.call is not None:
        call = entry.call
        doc["inputs"] = {"examples": call.data} if call.key[0] == "rows" else call.data
    result = entry.result
    if result is not None:
        if entry.kind == "classify":
            doc["outputs"] = {"classes": result.labels, "scores": result.scores}
        elif entry.kind == "regress":
            doc["outputs"] = {"outputs": result}
        else:
            doc["outputs"] = result
    return orjson.dumps(doc, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, np.ndarray):  # object arrays (strings), which orjson does not serialize
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

"""TF Serving's REST API on a small asyncio HTTP/1.1 server.

POST /v1/models/{name}[/versions/{v}|/labels/{l}]:(predict|classify|regress)
GET  /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]
GET  {prometheus path}  (when the monitoring config enables it)

Each request: decode JSON -> InferenceService (batcher or worker thread) -> encode JSON. A body larger
than the limit is refused with 413 from its Content-Length alone, before it is read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format

from . import json_codec
from .inference import Classify, InferenceService, Predict, Regress, Spec, signature_of, uses_feature_rows
from .metrics import Metrics
from .status import ServingError, as_serving_error, invalid

log = logging.getLogger(__name__)

PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I
)
MODEL_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I
)
MAX_HEADER_BYTES = 64 * 1024
# RFC 9112: a Content-Length is 1*DIGIT and a chunk size 1*HEXDIG (then optional ";ext"). Python's int()
# also takes a sign, "_" and spaces: a chunk size of "-10" used to loop the event loop forever.
CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
DECODE_IN_THREAD_BYTES = 1 << 20  # decode big bodies off the event loop
REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
JSON = b"application/json"


class RestApi:
    """Routes a request to the handler for its path; returns (HTTP status, body, content type)."""

    def __init__(
        self,
        service: InferenceService,
        metrics: Metrics,
        prometheus_path: str | None,
        max_request_bytes: int,
        timeout_ms: int = 0,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.prometheus_path = prometheus_path
        self.max_request_bytes = max_request_bytes
        self.timeout_ms = timeout_ms

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        if self.prometheus_path and path == self.prometheus_path and method == "GET":
            return 200, self.metrics.render().encode(), b"text/plain; version=0.0.4"
        if not path.lower().startswith("/v1/"):
            return 404, json_codec.encode_error(f"Not found: {method} {path}"), JSON
        start = time.perf_counter()
        model, api = "", ""
        try:
            if method == "POST":
                m = PREDICTION_PATH.fullmatch(path)
                if m is None:
                    raise invalid(f"Malformed request: {method} {path}")
                spec, api = _spec(m.group(1), m.group(2), m.group(3)), m.group(4).lower()
                model = spec.name
                doc = await self._loads(body)
                if api == "predict":
                    out = await self._deadline(self.predict(spec, doc))
                elif api == "classify":
                    out = await self._deadline(self.classify(spec, doc))
                else:
                    out = await self._deadline(self.regress(spec, doc))
            elif method == "GET":
                m = MODEL_PATH.fullmatch(path)
                if m is None:
                    raise invalid(f"Malformed request: {method} {path}")
                if not m.group(1):
                    raise invalid("Missing model name in request.")
                spec = _spec(m.group(1), m.group(2), m.group(3))
                model = spec.name
                api = "metadata" if m.group(4) else "status"
                out = self.metadata(spec) if m.group(4) else self.status(spec)
            else:
                raise invalid(f"Malformed request: {method} {path}")
        except Exception as exc:
            err = as_serving_error(exc)
            self.metrics.record_request(model, api, "REST", err.code, 0)
            log.debug("REST %s %s -> %s: %s", method, path, err.code, err.message)
            return err.http_status, json_codec.encode_error(err.message), JSON
        self.metrics.record_request(model, api, "REST", "OK", (time.perf_counter() - start) * 1e6)
        return 200, out, JSON

    async def _deadline(self, answer: Coroutine[Any, Any, bytes]) -> bytes:
        """--rest_api_timeout_in_ms: past it the request is abandoned with DEADLINE_EXCEEDED (504)."""
        if self.timeout_ms <= 0:
            return await answer
        try:
            if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request
                async with asyncio.timeout(self.timeout_ms / 1000):
                    return await answer
            return await asyncio.wait_for(answer, self.timeout_ms / 1000)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
            raise ServingError(
                "DEADLINE_EXCEEDED",
                f"Request did not finish within {self.timeout_ms} ms (--rest_api_timeout_in_ms)",
            ) from None

    async def _loads(self, body: bytes) -> dict[str, Any]:
        if len(body) > DECODE_IN_THREAD_BYTES:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.service.executor, json_codec.loads, body)
        return json_codec.loads(body)

    # ------------------------------------------------------------------------------------ handlers
    async def predict(self, spec: Spec, doc: dict[str, Any]) -> bytes:
        name = json_codec.signature_name(doc)
        servable = self.service.servable(spec)
        with servable:
            sig = signature_of(servable, name)
            fmt = json_codec.predict_format(doc)
            dtypes = {k: v.dtype for k, v in sig.inputs.items()}
            if fmt == "row" and _feature_rows(doc["instances"], sig) and uses_feature_rows(servable, sig):
                # Feature dicts for an Estimator's parsing signature: the core feeds them past ParseExample.
                call = Predict.prepare_rows(sig, doc["instances"], [])
            else:
                if fmt == "row":
                    inputs = json_codec.decode_instances(doc["instances"], dtypes)
                else:
                    inputs = json_codec.decode_inputs(doc["inputs"], dtypes)
                call = Predict.prepare(servable, sig, inputs, [])
            outputs = await self.service.run(servable, call)
        return json_codec.encode_predict(outputs, fmt)

    async def classify(self, spec: Spec, doc: dict[str, Any]) -> bytes:
        name = json_codec.signature_name(doc)
        rows = json_codec.decode_examples(doc, "classify")
        servable = self.service.servable(spec)
        with servable:
            sig = signature_of(servable, name)
            outputs = await self.service.run(servable, Classify.prepare(servable, sig, rows, None))
        classes, scores = Classify.finish(outputs, len(rows))
        k = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
        labels = (
            [[_text(c) for c in row] for row in classes.tolist()]
            if classes is not None
            else [[""] * k] * len(rows)
        )
        values = scores.tolist() if scores is not None else [[0.0] * k] * len(rows)
        results = [list(zip(ls, vs, strict=True)) for ls, vs in zip(labels, values, strict=True)]
        return json_codec.encode_classify(results)

    async def regress(self, spec: Spec, doc: dict[str, Any]) -> bytes:
        name = json_codec.signature_name(doc)
        rows = json_codec.decode_examples(doc, "regress")
        servable = self.service.servable(spec)
        with servable:
            sig = signature_of(servable, name)
            outputs = await self.service.run(servable, Regress.prepare(servable, sig, rows, None))
        return json_codec.encode_regress(Regress.finish(outputs, len(rows)))

    def status(self, spec: Spec) -> bytes:
        statuses = self.service.manager.status(spec.name, spec.version, spec.label)
        doc = {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": s.state,
                    "status": {"error_code": s.error_code, "error_message": s.error_message},
                }
                for s in statuses
            ]
        }
        return json_codec.dumps(doc)

    def metadata(self, spec: Spec) -> bytes:
        servable = self.service.servable(spec)
        sigs = json_format.MessageToDict(
            servable.signature_defs,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        doc = {
            "model_spec": {"name": spec.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": sigs},
        }
        return json_codec.dumps(doc)


def _spec(name: str, version: str | None, label: str | None) -> Spec:
    if version and label:
        raise invalid(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
    return Spec(unquote(name), int(version) if version else None, unquote(label) if label else None)


def _feature_rows(instances: list[Any], sig: Any) -> bool:
    """Instances are feature dicts (not the signature's own inputs): e.g. {"age": 39, ...} for `examples`."""
    first = instances[0]
    return json_codec.instances_are_objects(instances) and not set(first) <= set(sig.inputs)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------------------------------- HTTP/1.1
class HttpServer:
    """A minimal HTTP/1.1 server (keep-alive, pipelining, chunked bodies, 100-continue, size limits)."""

    def __init__(self, api: RestApi) -> None:
        self.api = api
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.inflight = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_address=True, backlog=1024
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace` seconds), close the connections."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            c.close()


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.head: tuple[str, str, bool, int | None, bool] | None = (
            None  # method, path, keep-alive, length, chunked
        )
        self.closing = False
        self.loop = asyncio.get_running_loop()  # once: the call makes a syscall (getpid)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.busy:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()
        elif len(self.buf) > self.server.api.max_request_bytes + MAX_HEADER_BYTES:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _process(self) -> None:
        while not self.busy and not self.closing:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEADER_BYTES:
                        self._reject(431, "Request header fields too large")
                    return
                head = bytes(self.buf[:end]).decode("latin-1")
                del self.buf[: end + 4]
                if not self._parse_head(head):
                    return
            method, path, keep_alive, length, chunked = self.head  # type: ignore[misc]
            if chunked:
                body = self._chunked_body()
                if body is None:
                    return
            else:
                assert length is not None
                if len(self.buf) < length:
                    return
                body = bytes(self.buf[:length])
                del self.buf[:length]
            self.head = None
            self.busy = True
            self.server.inflight += 1
            task = self.loop.create_task(self._respond(method, path, body, keep_alive))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)

    def _parse_head(self, head: str) -> bool:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._reject(400, f"Malformed request line: {lines[0][:100]!r}")
            return False
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        conn = headers.get("connection", "").lower()
        keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length: int | None = 0
        if not chunked and "content-length" in headers:
            if not CONTENT_LENGTH.fullmatch(headers["content-length"].encode("latin-1")):
                self._reject(400, "Invalid Content-Length")
                return False
            length = int(headers["content-length"])
            limit = self.server.api.max_request_bytes
            if length > limit:
                self._reject(
                    413,
                    f"Request body of {length} bytes exceeds the limit of {limit} "
                    "bytes (--max_request_bytes)",
                )
                return False
        path = target.split("?", 1)[0]
        self.head = (method.upper(), path, keep_alive, length, chunked)
        if headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        self._chunk_total = 0
        self._chunks: list[bytes] = []
        return True

    def _chunked_body(self) -> bytes | None:
        limit = self.server.api.max_request_bytes
        while True:
            end = self.buf.find(b"\r\n")
            if end < 0:
                return None
            match = CHUNK_SIZE.fullmatch(bytes(self.buf[:end]))
            if match is None:
                self._reject(400, "Malformed chunked encoding: invalid chunk size")
                return None
            size = int(match.group(1), 16)
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", end)
                if self.buf[end : end + 4] == b"\r\n\r\n":
                    del self.buf[: end + 4]
                elif trailer_end >= 0:
                    del self.buf[: trailer_end + 4]
                else:
                    return None
                body = b"".join(self._chunks)
                self._chunks = []
                return body
            if self._chunk_total + size > limit:
                self._reject(413, f"Request body exceeds the limit of {limit} bytes (--max_request_bytes)")
                return None
            if len(self.buf) < end + 2 + size + 2:
                return None
            self._chunks.append(bytes(self.buf[end + 2 : end + 2 + size]))
            self._chunk_total += size
            del self.buf[: end + 2 + size + 2]

    def _reject(self, status: int, message: str) -> None:
        """Answer an unreadable request and close: the rest of its body is never read."""
        self._write(status, json_codec.encode_error(message), JSON, keep_alive=False)
        self.closing = True
        self.buf.clear()
        self.transport.close()  # type: ignore[union-attr]

    def _write(self, status: int, body: bytes, content_type: bytes, keep_alive: bool) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type.decode()}\r\nContent-Length: {len(body)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n")
            + "\r\n"
        )
        self.transport.write(head.encode() + body)  # type: ignore[union-attr]

    async def _respond(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        try:
            try:
                status, out, ctype = await self.server.api.handle(method, path, body)
            except Exception as exc:  # a bug of ours: still an answer, never a dropped connection
                err = as_serving_error(exc)
                status, out, ctype = err.http_status, json_codec.encode_error(err.message), JSON
            if self.transport is None or self.transport.is_closing():
                return
            keep = keep_alive and not self.closing
            self._write(status, out, ctype, keep)
            if not keep:
                self.transport.close()
        finally:
            self.server.inflight -= 1
            self.busy = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            if self.buf:
                self._process()


__all__ = ["HttpServer", "RestApi"]

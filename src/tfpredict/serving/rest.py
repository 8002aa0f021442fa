"""TF Serving's REST API: routes, and JSON decoded into the request path and encoded from its answer.

POST /v1/models/{name}[/versions/{v}|/labels/{l}]:(predict|classify|regress)
GET  /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]
GET  {prometheus path}  (when the monitoring config enables it)
GET  /v1/health/live|ready, /v2/health/live|ready, /v2/models/{name}[/versions/{v}]/ready  (health.py)
OPTIONS any path  (a CORS preflight, with --rest_api_enable_cors_support)

Each request: decode JSON -> the kind's path (inference.py: batch -> predict -> unbatch) -> encode JSON.
The HTTP/1.1 server that carries it is http1.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format

from . import json_codec
from .deadlines import Deadlines
from .health import Health, rest_answer
from .http1 import Reply
from .inference import CLASSIFY, PREDICT, REGRESS, Answer, ExamplesRequest, InferenceService, Spec
from .limits import Http1Limits
from .metrics import Metrics
from .status import ServingError, as_serving_error, invalid

log = logging.getLogger(__name__)

PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I
)
MODEL_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I
)
JSON = b"application/json"


class RestApi:
    """Routes a request to its kind's path, or a status / metadata lookup: (HTTP status, body, type)."""

    def __init__(
        self,
        service: InferenceService,
        metrics: Metrics,
        prometheus_path: str | None,
        timeout_ms: int = 0,
        limits: Http1Limits | None = None,
        health: Health | None = None,
        cors: bool = False,
    ) -> None:
        self.health = health  # /v1/health/*, /v2/health/*, /v2/models/{name}/ready (health.py)
        self.cors = cors  # --rest_api_enable_cors_support: OPTIONS preflight answered (headers: server.py)
        self.service = service
        self.metrics = metrics
        self.prometheus_path = prometheus_path
        self.limits = limits or Http1Limits()
        self.timeout_ms = timeout_ms
        self.deadlines = Deadlines(timeout_ms / 1000) if timeout_ms > 0 else None

    def handle(self, method: str, path: str, body: bytes) -> Reply | Coroutine[Any, Any, Reply]:
        """The answer, at once when nothing needs awaiting (a status, metadata, an error, a cached answer),
        else a coroutine to await (the request's path to the model): no Task for what is answered now."""
        if self.prometheus_path and path == self.prometheus_path and method == "GET":
            return 200, self.metrics.render().encode(), b"text/plain; version=0.0.4"
        if self.cors and method == "OPTIONS":  # a CORS preflight: the headers say what is allowed
            return 200, b"", JSON
        probe = rest_answer(self.health, method, path) if self.health is not None else None
        if probe is not None:
            return probe[0], json_codec.dumps(probe[1]), JSON
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
                body_key = self._body_key(spec, api, body)
                cache = self.service.cache
                hit = cache.get_body(body_key, model) if cache is not None and body_key is not None else None
                if hit is None:
                    return self._infer(spec, api, body, body_key, start)
                out = hit  # the same bytes answered before, by this version
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
            return self._failed(exc, method, path, model, api)
        self.metrics.record_request(model, api, "REST", "OK", (time.perf_counter() - start) * 1e6)
        return 200, out, JSON

    async def _infer(self, spec: Spec, api: str, body: bytes, body_key: bytes | None, start: float) -> Reply:
        """decode -> the kind's path -> encode; kept under `body_key` when the model uses the cache."""
        try:
            doc = await self._loads(body)
            decode, kind, encode = PATHS[api]
            request = decode(spec, doc)
            # kept under the body key: the outputs cache would hold the same answer twice
            answer = kind.infer(self.service, request, cached=body_key is None)
            out = encode(request, await self._deadline(answer))
        except Exception as exc:
            return self._failed(exc, "POST", "", spec.name, api)
        if body_key is not None:
            self.service.cache.put_body(body_key, spec.name, out)  # type: ignore[union-attr]
        self.metrics.record_request(spec.name, api, "REST", "OK", (time.perf_counter() - start) * 1e6)
        return 200, out, JSON

    def _failed(self, exc: Exception, method: str, path: str, model: str, api: str) -> Reply:
        err = as_serving_error(exc)
        self.metrics.record_request(model, api, "REST", err.code, 0)
        log.debug("REST %s %s %s -> %s: %s", method, path or model, api, err.code, err.message)
        return err.http_status, json_codec.encode_error(err.message), JSON

    def _body_key(self, spec: Spec, api: str, body: bytes) -> bytes | None:
        """The response cache's key of this body as sent, when its model uses the cache and logs no
        requests (a sampled request must go the whole way, to be logged as it was decoded)."""
        cache, requests = self.service.cache, self.service.request_log
        if cache is None or (requests is not None and requests.logs(spec.name)):
            return None
        try:
            servable = self.service.servable(spec)
        except ServingError:
            return None  # the whole path gives the error
        return cache.body_key(servable, api, body)

    async def _deadline(self, answer: Coroutine[Any, Any, Answer]) -> Answer:
        """--rest_api_timeout_in_ms: past it the request is abandoned with DEADLINE_EXCEEDED (504)."""
        if self.deadlines is None:
            return await answer
        try:
            return await self.deadlines.run(answer)
        except TimeoutError:
            raise ServingError(
                "DEADLINE_EXCEEDED",
                f"Request did not finish within {self.timeout_ms} ms (--rest_api_timeout_in_ms)",
            ) from None

    async def _loads(self, body: bytes) -> dict[str, Any]:
        if len(body) > self.limits.decode_in_thread_bytes:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.service.executor, json_codec.loads, body)
        return json_codec.loads(body)

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


# ------------------------------------------------------------------------------------------- decode
class _JsonPredict:
    """A :predict body; decoded once the signature is found, since JSON values take its input dtypes."""

    __slots__ = ("spec", "doc", "format")
    output_filter = ()

    def __init__(self, spec: Spec, doc: dict[str, Any]) -> None:
        self.spec = _signed(spec, doc)
        self.doc = doc
        self.format = ""  # "row" (instances) or "columnar" (inputs), known after feature_rows()

    def feature_rows(self, sig: Any) -> list[dict[str, Any]] | None:
        self.format = json_codec.predict_format(self.doc)
        if self.format == "row" and _feature_rows(self.doc["instances"], sig):
            return self.doc["instances"]  # type: ignore[no-any-return]
        return None

    def tensors(self, sig: Any) -> dict[str, Any]:
        dtypes = {k: v.dtype for k, v in sig.inputs.items()}
        if self.format == "row":
            return json_codec.decode_instances(self.doc["instances"], dtypes)
        return json_codec.decode_inputs(self.doc["inputs"], dtypes)


def _signed(spec: Spec, doc: dict[str, Any]) -> Spec:
    """The URL's model spec with the body's signature_name."""
    return Spec(spec.name, spec.version, spec.label, json_codec.signature_name(doc))


def _feature_rows(instances: list[Any], sig: Any) -> bool:
    """Instances are feature dicts (not the signature's own inputs): e.g. {"age": 39, ...} for `examples`."""
    first = instances[0]
    return json_codec.instances_are_objects(instances) and not set(first) <= set(sig.inputs)


def _examples(method: str) -> Callable[[Spec, dict[str, Any]], ExamplesRequest]:
    def decode(spec: Spec, doc: dict[str, Any]) -> ExamplesRequest:
        return ExamplesRequest(_signed(spec, doc), json_codec.decode_examples(doc, method), None)

    return decode


# ------------------------------------------------------------------------------------------- encode
def _encode_predict(request: _JsonPredict, answer: Answer) -> bytes:
    return json_codec.encode_predict(answer.result, request.format)


def _encode_classify(request: ExamplesRequest, answer: Answer) -> bytes:
    labels, scores, width = answer.result
    n = request.size
    results = [
        list(zip(ls, vs, strict=True))
        for ls, vs in zip(
            labels if labels is not None else [[""] * width] * n,
            scores if scores is not None else [[0.0] * width] * n,
            strict=True,
        )
    ]
    return json_codec.encode_classify(results)


def _encode_regress(request: ExamplesRequest, answer: Answer) -> bytes:
    return json_codec.encode_regress(answer.result)


PATHS: dict[str, tuple[Callable[[Spec, dict[str, Any]], Any], Any, Callable[[Any, Answer], bytes]]] = {
    "predict": (_JsonPredict, PREDICT, _encode_predict),  # api: (decode, kind, encode)
    "classify": (_examples("classify"), CLASSIFY, _encode_classify),
    "regress": (_examples("regress"), REGRESS, _encode_regress),
}

__all__ = ["RestApi"]

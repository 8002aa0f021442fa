"""TF Serving's gRPC methods (PredictionService, ModelService): async functions of the API's messages.

Transport-free: a method takes a request message and returns the response message or raises ServingError.
Both gRPC front ends serve this table: tfpredict's own HTTP/2 one (grpc_http2.py, the default) and grpcio's
server (grpc_grpcio.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from . import proto_codec
from .config import model_configs_from_proto
from .inference import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    Classify,
    InferenceService,
    Predict,
    Regress,
    Spec,
    signature_of,
)
from .metrics import Metrics
from .status import ServingError, as_serving_error, invalid

log = logging.getLogger(__name__)


def _spec(model_spec: Any) -> Spec:
    which = model_spec.WhichOneof("version_choice")
    if not model_spec.name:
        raise invalid("Missing ModelSpec.name")
    version = model_spec.version.value if which == "version" else None
    label = model_spec.version_label if which == "version_label" else None
    return Spec(model_spec.name, version, label, model_spec.signature_name)


def _label(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _fill_spec(out: Any, name: str, version: int, signature: str) -> None:
    out.name = name
    out.version.value = version
    out.signature_name = signature


PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


@dataclass(frozen=True)
class Method:
    """One unary gRPC method: how to parse its request, and the coroutine that answers it."""

    request_type: Any
    handler: Callable[[Any], Coroutine[Any, Any, Any]]


class GrpcApi:
    """The methods of TF Serving's PredictionService and ModelService, keyed by gRPC path."""

    def __init__(
        self, service: InferenceService, metrics: Metrics, reload: Callable[[list[Any]], None]
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.reload = reload

    def methods(self) -> dict[str, Method]:
        """{"/tensorflow.serving.PredictionService/Predict": Method, ...}"""
        measured = {
            "Predict": (predict_pb2.PredictRequest, "predict", self._predict),
            "Classify": (classification_pb2.ClassificationRequest, "classify", self._classify),
            "Regress": (regression_pb2.RegressionRequest, "regress", self._regress),
            "MultiInference": (inference_pb2.MultiInferenceRequest, "multi_inference", self._multi),
            "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest, "metadata", self._metadata),
        }
        table = {
            f"/{PREDICTION_SERVICE}/{name}": Method(request_type, self._measured(api, fn))
            for name, (request_type, api, fn) in measured.items()
        }
        table[f"/{MODEL_SERVICE}/GetModelStatus"] = Method(
            get_model_status_pb2.GetModelStatusRequest, self._status
        )
        table[f"/{MODEL_SERVICE}/HandleReloadConfigRequest"] = Method(
            model_management_pb2.ReloadConfigRequest, self._reload
        )
        return table

    def _measured(
        self, api: str, fn: Callable[[Any], Awaitable[Any]]
    ) -> Callable[[Any], Coroutine[Any, Any, Any]]:
        """`fn` with its requests counted and timed (Prometheus), its errors mapped to ServingError."""
        metrics = self.metrics

        async def handler(request: Any) -> Any:
            start = time.perf_counter()
            model = getattr(getattr(request, "model_spec", None), "name", "")
            try:
                response = await fn(request)
            except Exception as exc:
                err = as_serving_error(exc)
                metrics.record_request(model, api, "GRPC", err.code, 0)
                raise err from exc
            metrics.record_request(model, api, "GRPC", "OK", (time.perf_counter() - start) * 1e6)
            return response

        return handler

    async def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        spec = _spec(request.model_spec)
        servable = self.service.servable(spec)
        with servable:
            sig = signature_of(servable, spec.signature)
            inputs = {k: proto_codec.to_ndarray(v, k) for k, v in request.inputs.items()}
            call = Predict.prepare(servable, sig, inputs, list(request.output_filter))
            outputs = await self.service.run(servable, call)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, spec.name, servable.version, sig.name)
        for k, v in outputs.items():
            proto_codec.from_ndarray(v, response.outputs[k])
        return response

    async def _classify(
        self, request: Any, examples: Any = None
    ) -> classification_pb2.ClassificationResponse:
        spec = _spec(request.model_spec)
        if examples is None:
            examples = proto_codec.serialized_examples(request.input)
        servable = self.service.servable(spec)
        with servable:
            sig = signature_of(servable, spec.signature)
            outputs = await self.service.run(servable, Classify.prepare(servable, sig, None, examples))
        classes, scores = Classify.finish(outputs, len(examples))
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, spec.name, servable.version, sig.name)
        out = response.result.classifications
        if classes is None:
            for row in scores.tolist():  # type: ignore[union-attr]
                c = out.add()
                for score in row:
                    c.classes.add().score = score
            return response
        labels = [[_label(v) for v in row] for row in classes.tolist()]
        if scores is None:
            for row in labels:
                c = out.add()
                for label in row:
                    c.classes.add().label = label
            return response
        for label_row, score_row in zip(labels, scores.tolist(), strict=True):
            c = out.add()
            for label, score in zip(label_row, score_row, strict=True):
                cl = c.classes.add()
                cl.label = label
                cl.score = score
        return response

    async def _regress(self, request: Any, examples: Any = None) -> regression_pb2.RegressionResponse:
        spec = _spec(request.model_spec)
        if examples is None:
            examples = proto_codec.serialized_examples(request.input)
        servable = self.service.servable(spec)
        with servable:
            sig = signature_of(servable, spec.signature)
            outputs = await self.service.run(servable, Regress.prepare(servable, sig, None, examples))
        values = Regress.finish(outputs, len(examples))
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, spec.name, servable.version, sig.name)
        for v in values.tolist():
            response.result.regressions.add().value = v
        return response

    async def _multi(self, request: Any) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise invalid("MultiInferenceRequest must contain at least one task")
        names = {t.model_spec.name for t in request.tasks}
        if len(names) != 1:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        signatures = [t.model_spec.signature_name or "serving_default" for t in request.tasks]
        if len(set(signatures)) != len(signatures):
            raise invalid("Duplicate evaluation of signature: " + ", ".join(signatures))
        examples = proto_codec.serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            result = response.results.add()
            if task.method_name == CLASSIFY_METHOD:
                r = await self._classify(task, examples)
                result.classification_result.CopyFrom(r.result)
            elif task.method_name == REGRESS_METHOD:
                r = await self._regress(task, examples)
                result.regression_result.CopyFrom(r.result)
            else:
                raise ServingError("UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}")
            result.model_spec.CopyFrom(r.model_spec)
        return response

    async def _metadata(self, request: Any) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for f in request.metadata_field:
            if f != "signature_def":
                raise invalid(f"Metadata field {f} is not supported")
        spec = _spec(request.model_spec)
        servable = self.service.servable(spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        packed = any_pb2.Any()
        packed.Pack(servable.signature_defs)
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    async def _status(self, request: Any) -> get_model_status_pb2.GetModelStatusResponse:
        spec = _spec(request.model_spec)
        statuses = self.service.manager.status(spec.name, spec.version, spec.label)
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in statuses:
            v = response.model_version_status.add()
            v.version = s.version
            v.state = get_model_status_pb2.ModelVersionStatus.State.Value(s.state)
            v.status.error_code = getattr(grpc.StatusCode, s.error_code).value[0]
            v.status.error_message = s.error_message
        return response

    async def _reload(self, request: Any) -> model_management_pb2.ReloadConfigResponse:
        """Errors go in the response's status, as TF Serving answers them."""
        response = model_management_pb2.ReloadConfigResponse()
        try:
            configs = model_configs_from_proto(request.config)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.service.executor, self.reload, configs)
        except Exception as exc:
            err = as_serving_error(exc)
            response.status.error_code = err.code_number
            response.status.error_message = err.message
        return response

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
from .health import HEALTH_SERVICE, Health, HealthCheckRequest
from .inference import (
    CLASSIFY,
    CLASSIFY_METHOD,
    MULTI_INFERENCE,
    PREDICT,
    REGRESS,
    Answer,
    Classification,
    ExamplesRequest,
    InferenceService,
    InferenceTask,
    MultiInference,
    MultiInferenceRequest,
    Spec,
)
from .metrics import Metrics
from .status import as_serving_error, invalid

log = logging.getLogger(__name__)

ClassificationRequest = classification_pb2.ClassificationRequest
RegressionRequest = regression_pb2.RegressionRequest
MultiRequest = inference_pb2.MultiInferenceRequest
MetadataRequest = get_model_metadata_pb2.GetModelMetadataRequest

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


@dataclass(frozen=True)
class Method:
    """One gRPC method: how to parse its request, and the coroutine that answers it (unary), or with
    `streaming` the async iterator of its answers (server streaming: grpc.health.v1.Health/Watch)."""

    request_type: Any
    handler: Callable[[Any], Any]
    streaming: bool = False


class GrpcApi:
    """The methods of TF Serving's PredictionService and ModelService, keyed by gRPC path."""

    def __init__(
        self,
        service: InferenceService,
        metrics: Metrics,
        reload: Callable[[list[Any]], None],
        *,
        health: Health | None = None,
        tensor_content: bool = False,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.reload = reload
        self.health = health  # --enable_grpc_healthcheck_service: grpc.health.v1.Health is served
        self.tensor_content = tensor_content  # --enable_serialization_as_tensor_content

    def methods(self) -> dict[str, Method]:
        """{"/tensorflow.serving.PredictionService/Predict": Method, ...}"""
        encode_predict = _encode_packed_predict if self.tensor_content else _encode_predict
        # name: (request message, metric label, decode, the kind's path, encode)
        paths: dict[str, tuple[Any, str, Callable[[Any], Any], Any, Callable[[Any], Any]]] = {
            "Predict": (predict_pb2.PredictRequest, "predict", _ProtoPredict, PREDICT.infer, encode_predict),
            "Classify": (ClassificationRequest, "classify", _examples, CLASSIFY.infer, _encode_classify),
            "Regress": (RegressionRequest, "regress", _examples, REGRESS.infer, _encode_regress),
            "MultiInference": (MultiRequest, "multi_inference", _multi, MULTI_INFERENCE.infer, _encode_multi),
            "GetModelMetadata": (MetadataRequest, "metadata", _same, _metadata, _same),
        }
        table = {
            f"/{PREDICTION_SERVICE}/{name}": Method(request_type, self._handler(api, decode, infer, encode))
            for name, (request_type, api, decode, infer, encode) in paths.items()
        }
        table[f"/{MODEL_SERVICE}/GetModelStatus"] = Method(
            get_model_status_pb2.GetModelStatusRequest, self._status
        )
        table[f"/{MODEL_SERVICE}/HandleReloadConfigRequest"] = Method(
            model_management_pb2.ReloadConfigRequest, self._reload
        )
        if self.health is not None:
            table[f"/{HEALTH_SERVICE}/Check"] = Method(HealthCheckRequest, self.health.check)
            table[f"/{HEALTH_SERVICE}/Watch"] = Method(HealthCheckRequest, self.health.watch, streaming=True)
        return table

    def _handler(
        self,
        api: str,
        decode: Callable[[Any], Any],
        infer: Callable[[InferenceService, Any], Awaitable[Any]],
        encode: Callable[[Any], Any],
    ) -> Callable[[Any], Coroutine[Any, Any, Any]]:
        """decode -> the kind's path -> encode, counted and timed (Prometheus), errors as ServingError."""
        service, metrics = self.service, self.metrics

        async def handler(message: Any) -> Any:
            start = time.perf_counter()
            model = getattr(getattr(message, "model_spec", None), "name", "")
            try:
                response = encode(await infer(service, decode(message)))
            except Exception as exc:
                err = as_serving_error(exc)
                metrics.record_request(model, api, "GRPC", err.code, 0)
                raise err from exc
            metrics.record_request(model, api, "GRPC", "OK", (time.perf_counter() - start) * 1e6)
            return response

        return handler

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


# ------------------------------------------------------------------------------------------- decode
def _spec(model_spec: Any) -> Spec:
    which = model_spec.WhichOneof("version_choice")
    if not model_spec.name:
        raise invalid("Missing ModelSpec.name")
    version = model_spec.version.value if which == "version" else None
    label = model_spec.version_label if which == "version_label" else None
    return Spec(model_spec.name, version, label, model_spec.signature_name)


class _ProtoPredict:
    """A PredictRequest message; its TensorProtos are decoded once the signature is found."""

    __slots__ = ("message", "spec")

    def __init__(self, message: predict_pb2.PredictRequest) -> None:
        self.message = message
        self.spec = _spec(message.model_spec)

    @property
    def output_filter(self) -> list[str]:
        return list(self.message.output_filter)

    def feature_rows(self, sig: Any) -> None:
        return None  # gRPC sends the signature's own tensors

    def tensors(self, sig: Any) -> dict[str, Any]:
        return {k: proto_codec.to_ndarray(v, k) for k, v in self.message.inputs.items()}


def _examples(message: Any) -> ExamplesRequest:
    spec = _spec(message.model_spec)
    return ExamplesRequest(spec, None, proto_codec.serialized_examples(message.input))


def _multi(message: inference_pb2.MultiInferenceRequest) -> MultiInferenceRequest:
    tasks = message.tasks
    MultiInference.check([t.model_spec.name for t in tasks], [t.model_spec.signature_name for t in tasks])
    serialized = proto_codec.serialized_examples(message.input)
    return MultiInferenceRequest(
        tuple(InferenceTask(_spec(t.model_spec), t.method_name) for t in tasks), serialized
    )


def _same(value: Any) -> Any:
    return value


async def _metadata(
    service: InferenceService, request: Any
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata: the version's SignatureDefs (no model call, so no decode or encode step)."""
    if not request.metadata_field:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for f in request.metadata_field:
        if f != "signature_def":
            raise invalid(f"Metadata field {f} is not supported")
    spec = _spec(request.model_spec)
    servable = service.servable(spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = servable.version
    packed = any_pb2.Any()
    packed.Pack(servable.signature_defs)
    response.metadata["signature_def"].CopyFrom(packed)
    return response


# ------------------------------------------------------------------------------------------- encode
def _fill_spec(out: Any, answer: Answer) -> None:
    out.name = answer.model
    out.version.value = answer.version
    out.signature_name = answer.signature


def _encode_predict(answer: Answer) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, answer)
    for k, v in answer.result.items():
        proto_codec.from_ndarray(v, response.outputs[k])
    return response


def _encode_packed_predict(answer: Answer) -> predict_pb2.PredictResponse:
    """--enable_serialization_as_tensor_content: numeric outputs as tensor_content bytes."""
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, answer)
    for k, v in answer.result.items():
        proto_codec.from_ndarray_packed(v, response.outputs[k])
    return response


def _fill_classifications(out: classification_pb2.ClassificationResult, result: Classification) -> None:
    classifications = out.classifications
    labels, scores = result.labels, result.scores
    if labels is None:
        for row in scores:  # type: ignore[union-attr]
            c = classifications.add()
            for score in row:
                c.classes.add().score = score
    elif scores is None:
        for row in labels:
            c = classifications.add()
            for label in row:
                c.classes.add().label = label
    else:
        for label_row, score_row in zip(labels, scores, strict=True):
            c = classifications.add()
            for label, score in zip(label_row, score_row, strict=True):
                cl = c.classes.add()
                cl.label = label
                cl.score = score


def _fill_regressions(out: regression_pb2.RegressionResult, values: Any) -> None:
    regressions = out.regressions
    for v in values.tolist():
        regressions.add().value = v


def _examples_encoder(response_type: Any, fill: Callable[[Any, Any], None]) -> Callable[[Answer], Any]:
    """A Classify or Regress answer as its response message: model spec and result."""

    def encode(answer: Answer) -> Any:
        response = response_type()
        _fill_spec(response.model_spec, answer)
        fill(response.result, answer.result)
        return response

    return encode


_encode_classify = _examples_encoder(classification_pb2.ClassificationResponse, _fill_classifications)
_encode_regress = _examples_encoder(regression_pb2.RegressionResponse, _fill_regressions)


def _encode_multi(answers: list[tuple[str, Answer]]) -> inference_pb2.MultiInferenceResponse:
    response = inference_pb2.MultiInferenceResponse()
    for method, answer in answers:
        result = response.results.add()
        if method == CLASSIFY_METHOD:
            _fill_classifications(result.classification_result, answer.result)
        else:
            _fill_regressions(result.regression_result, answer.result)
        _fill_spec(result.model_spec, answer)
    return response

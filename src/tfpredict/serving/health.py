"""Health for load balancers and probes: is the server up, and does every configured model have an
AVAILABLE version? One answer for the standard gRPC service `grpc.health.v1.Health` (Check, Watch; with
--enable_grpc_healthcheck_service), the REST pair /v1/health/live and /v1/health/ready, and KServe's
/v2/health/live, /v2/health/ready and /v2/models/{name}/ready (rest.py routes them).

gRPC service names: "" (the whole server), TF Serving's "ModelService" and "PredictionService" (also by
their full names) mean every model; a model's name means that model; any other is unknown (NOT_FOUND for
Check, SERVICE_UNKNOWN for Watch, as the gRPC health protocol says). Once the server is shutting down,
everything is NOT_SERVING (the readiness probe fails while in-flight requests drain).

The two messages of grpc/health/v1/health.proto are declared here in a pool of their own, so that a
process which also imports grpcio-health-checking's copy gets no duplicate-symbol clash."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .status import ServingError

HEALTH_SERVICE = "grpc.health.v1.Health"
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3  # HealthCheckResponse.ServingStatus
WATCH_POLL_SECONDS = 0.1  # how often a Watch looks at the models' states
_WHOLE_SERVER = {
    "",
    "ModelService",
    "PredictionService",
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
}


def _messages() -> tuple[Any, Any]:
    f = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto", package="grpc.health.v1")
    f.syntax = "proto3"
    T = descriptor_pb2.FieldDescriptorProto
    request = f.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    response = f.message_type.add(name="HealthCheckResponse")
    enum = response.enum_type.add(name="ServingStatus")
    for name, number in (("UNKNOWN", 0), ("SERVING", 1), ("NOT_SERVING", 2), ("SERVICE_UNKNOWN", 3)):
        enum.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=T.TYPE_ENUM,
        label=T.LABEL_OPTIONAL,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.health.v1.{n}"))
        for n in ("HealthCheckRequest", "HealthCheckResponse")
    )


HealthCheckRequest, HealthCheckResponse = _messages()


class Health:
    """The server's health, read from the model manager's version states (nothing is cached)."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager  # a ModelManager: names() and status(name)
        self.stopping = False  # set when shutdown begins

    def live(self) -> bool:
        """The process answers (liveness): true until shutdown begins."""
        return not self.stopping

    def model_ready(self, name: str) -> bool | None:
        """Whether the model has an AVAILABLE version; None when no such model is configured."""
        if name not in self.manager.names():
            return None
        try:
            return any(s.state == "AVAILABLE" for s in self.manager.status(name))
        except ServingError:  # no version at all yet
            return False

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version (readiness), and shutdown has not begun."""
        names = self.manager.names()
        return not self.stopping and bool(names) and all(self.model_ready(n) for n in names)

    def serving_status(self, service: str) -> int | None:
        """SERVING or NOT_SERVING for a gRPC health service name; None when the name is unknown."""
        if service in _WHOLE_SERVER:
            return SERVING if self.ready() else NOT_SERVING
        ready = self.model_ready(service)
        if ready is None:
            return None
        return SERVING if ready and not self.stopping else NOT_SERVING

    # ------------------------------------------------------------------ grpc.health.v1.Health
    async def check(self, request: Any) -> Any:
        status = self.serving_status(request.service)
        if status is None:
            raise ServingError("NOT_FOUND", f"unknown service {request.service!r}")
        return HealthCheckResponse(status=status)

    async def watch(self, request: Any) -> AsyncIterator[Any]:
        """The status now, then each change, until the server stops (its last answer: NOT_SERVING)."""
        last = None
        while True:
            status = self.serving_status(request.service)
            status = SERVICE_UNKNOWN if status is None else status
            if status != last:
                last = status
                yield HealthCheckResponse(status=status)
            if self.stopping:
                return
            await asyncio.sleep(WATCH_POLL_SECONDS)


# ---------------------------------------------------------------------------------------------- REST
LIVE_PATHS = ("/v1/health/live", "/v2/health/live")
READY_PATHS = ("/v1/health/ready", "/v2/health/ready")
MODEL_READY = re.compile(r"/v2/models/([^/]+)(?:/versions/(\d+))?/ready")


def rest_answer(health: Health, method: str, path: str) -> tuple[int, dict[str, Any]] | None:
    """The (HTTP status, JSON document) of a health URL, or None when `path` is not one. Not ready: 503
    (a probe fails on any status >= 400; KServe's clients read any 4xx/5xx as false)."""
    if path in LIVE_PATHS or path in READY_PATHS:
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"{method} {path}: use GET"}
        if path in LIVE_PATHS:
            live = health.live()
            return (200 if live else 503), {"live": live}
        ready = health.ready()
        models = {n: bool(health.model_ready(n)) for n in health.manager.names()}
        return (200 if ready else 503), {"ready": ready, "models": models}
    m = MODEL_READY.fullmatch(path)
    if m is None:
        return None
    if method not in ("GET", "HEAD"):
        return 405, {"error": f"{method} {path}: use GET"}
    name = unquote(m.group(1))
    known = _version_ready(health, name, int(m.group(2))) if m.group(2) else health.model_ready(name)
    if known is None:
        return 404, {"error": f"Model {name} is not configured"}
    ready = known and not health.stopping
    return (200 if ready else 503), {"name": name, "ready": ready}


def _version_ready(health: Health, name: str, version: int) -> bool | None:
    if name not in health.manager.names():
        return None
    try:
        return any(s.state == "AVAILABLE" for s in health.manager.status(name, version))
    except ServingError:
        return False

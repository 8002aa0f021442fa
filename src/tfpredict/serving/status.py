"""Request errors with TF Serving's status codes, and how each maps to gRPC and HTTP."""

from __future__ import annotations

import logging

import grpc

from ..errors import InputError, ModelLoadError, PredictionError, TfpredictError

log = logging.getLogger(__name__)

# TF Serving's http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request that cannot be answered: a status code name (as in grpc.StatusCode) and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.UNKNOWN)

    @property
    def code_number(self) -> int:
        return self.grpc_code.value[0]


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def as_serving_error(exc: BaseException) -> ServingError:
    """Map an exception raised while answering a request to a status; our own bugs: INTERNAL, logged."""
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, InputError):
        return ServingError("INVALID_ARGUMENT", exc.message)
    if isinstance(exc, ModelLoadError):
        return ServingError("FAILED_PRECONDITION", exc.message)
    if isinstance(exc, PredictionError):
        code = _tf_code(exc.__cause__) or "INVALID_ARGUMENT"
        return ServingError(code, exc.message)
    if isinstance(exc, TfpredictError):
        return ServingError("INVALID_ARGUMENT", exc.message)
    tf_code = _tf_code(exc)
    if tf_code:
        return ServingError(tf_code, str(getattr(exc, "message", exc)))
    log.error("unexpected error (a bug in tfpredict serve?)", exc_info=exc)
    return ServingError("INTERNAL", f"{type(exc).__name__}: {exc}")


def _tf_code(exc: BaseException | None) -> str | None:
    """The status code name of a TensorFlow OpError, without importing TensorFlow for other exceptions."""
    code = getattr(exc, "error_code", None)
    if isinstance(code, int) and type(exc).__module__.startswith("tensorflow"):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return None

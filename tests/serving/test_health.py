"""Health: grpc.health.v1.Health (Check, Watch) on both gRPC front ends with
--enable_grpc_healthcheck_service, the REST pair /v1/health/live|ready and KServe's /v2/health/live|ready and
/v2/models/{name}/ready, against real servers: NOT_SERVING / 503 while the only model is loading (a model
whose warm-up waits for a gate file) or broken (not a SavedModel), SERVING / 200 once it is AVAILABLE."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from tfpredict.serving.health import (
    NOT_SERVING,
    SERVICE_UNKNOWN,
    SERVING,
    HealthCheckRequest,
    HealthCheckResponse,
)

from .conftest import Server
from .load_models import broken_model, gated_model

FRONT_ENDS = ["http2", "grpcio"]


def wait_live(server: Server, timeout: float = 120.0) -> None:
    """Until the REST port answers (the ports open before the models load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log[-3000:]
        try:
            if server.get("/v1/health/live").status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server never answered /v1/health/live\n{server.log[-3000:]}")


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def check(server: Server, service: str = "") -> int:
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        return int(call(HealthCheckRequest(service=service), timeout=10).status)


def watch(channel: grpc.Channel, service: str = "") -> Any:
    call = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=HealthCheckRequest.SerializeToString,
        response_deserializer=HealthCheckResponse.FromString,
    )
    return call(HealthCheckRequest(service=service), timeout=120)


def rest(server: Server) -> dict[str, int]:
    return {
        p: server.get(p).status_code
        for p in ("/v1/health/live", "/v1/health/ready", "/v2/health/live", "/v2/health/ready")
    } | {"model": server.get("/v2/models/gated/ready").status_code}


@pytest.mark.parametrize("frontend", FRONT_ENDS)
def test_loading_model_is_not_serving_until_available(tmp_path: Path, frontend: str) -> None:
    base, gate = gated_model(tmp_path)
    server = Server(
        "--model_name=gated",
        f"--model_base_path={base}",
        "--enable_grpc_healthcheck_service",
        f"--grpc_frontend={frontend}",
    )
    try:
        wait_live(server)
        wait_for(lambda: "version 1 from" in server.log)  # the load has begun
        assert rest(server) == {
            "/v1/health/live": 200,
            "/v1/health/ready": 503,
            "/v2/health/live": 200,
            "/v2/health/ready": 503,
            "model": 503,
        }
        assert server.get("/v1/health/ready").json() == {"ready": False, "models": {"gated": False}}
        assert server.get("/v1/models/gated").json()["model_version_status"][0]["state"] == "LOADING"
        for service in ("", "gated", "tensorflow.serving.PredictionService", "ModelService"):
            assert check(server, service) == NOT_SERVING, service
        with grpc.insecure_channel(server.grpc) as channel:
            statuses = watch(channel)
            assert next(statuses).status == NOT_SERVING
            gate.open()
            assert next(statuses).status == SERVING  # the next answer comes when the state changes
            statuses.cancel()
        assert rest(server) == dict.fromkeys(rest(server), 200)
        assert server.get("/v2/models/gated/versions/1/ready").json() == {"name": "gated", "ready": True}
        assert check(server) == check(server, "gated") == SERVING
        with grpc.insecure_channel(server.grpc) as channel:
            with pytest.raises(grpc.RpcError) as err:
                grpc_check = channel.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=HealthCheckRequest.SerializeToString,
                    response_deserializer=HealthCheckResponse.FromString,
                )
                grpc_check(HealthCheckRequest(service="no.such.Service"), timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert next(watch(channel, "no.such.Service")).status == SERVICE_UNKNOWN
    finally:
        gate.open()
        assert server.stop() == 0


@pytest.mark.parametrize("frontend", FRONT_ENDS)
def test_broken_model_is_not_serving(tmp_path: Path, frontend: str) -> None:
    base = broken_model(tmp_path, "gated")  # the same name as above: rest() asks for it
    server = Server(
        "--model_name=gated",
        f"--model_base_path={base}",
        "--enable_grpc_healthcheck_service",
        "--max_num_load_retries=0",
        f"--grpc_frontend={frontend}",
    ).wait()  # the start-up line comes once the first load attempt is over
    try:
        status = server.get("/v1/models/gated").json()["model_version_status"][0]
        assert status["state"] == "END" and status["status"]["error_code"] != "OK", status
        assert rest(server) == {
            "/v1/health/live": 200,
            "/v1/health/ready": 503,
            "/v2/health/live": 200,
            "/v2/health/ready": 503,
            "model": 503,
        }
        assert check(server) == check(server, "gated") == NOT_SERVING
        assert server.get("/v2/models/nope/ready").status_code == 404
    finally:
        assert server.stop() == 0


def test_health_service_is_off_without_its_flag(tmp_path: Path) -> None:
    base, gate = gated_model(tmp_path)
    gate.open()
    server = Server("--model_name=gated", f"--model_base_path={base}").wait()
    try:
        with pytest.raises(grpc.RpcError) as err:
            check(server)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert server.get("/v1/health/ready").status_code == 200  # REST health needs no flag
    finally:
        server.stop()


def test_watch_ends_and_readiness_fails_on_shutdown(tmp_path: Path) -> None:
    """SIGTERM: the Watch stream ends with NOT_SERVING then OK, so the drain does not wait for it."""
    base, gate = gated_model(tmp_path)
    gate.open()
    server = Server(
        "--model_name=gated", f"--model_base_path={base}", "--enable_grpc_healthcheck_service"
    ).wait()
    with grpc.insecure_channel(server.grpc) as channel:
        statuses = watch(channel)
        assert next(statuses).status == SERVING
        server.proc.terminate()
        assert next(statuses).status == NOT_SERVING
        assert list(statuses) == []  # the stream ends (StopIteration: status OK)
    assert server.stop() == 0
    assert "draining" in server.log

"""Dynamic batching, load shedding, versions and labels, warm-up, and behaviour under faults
(malformed requests, oversized bodies, a model that cannot load, SIGTERM with requests in flight)."""

from __future__ import annotations

import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from .conftest import Server

MAX_BYTES = 100_000
BATCH_TIMEOUT_S = 1.0
BATCHING = f"""
max_batch_size {{ value: 4 }}
batch_timeout_micros {{ value: {int(BATCH_TIMEOUT_S * 1e6)} }}
max_enqueued_batches {{ value: 1 }}
num_batch_threads {{ value: 1 }}
"""


def write_warmup(version_dir: Path) -> None:
    import tensorflow as tf

    log = prediction_log_pb2.PredictionLog()
    req = log.predict_log.request
    req.model_spec.name = "versions"
    req.inputs["x"].dtype = types_pb2.DT_FLOAT
    req.inputs["x"].float_val.append(1.0)
    req.inputs["x"].tensor_shape.dim.add().size = 1
    (version_dir / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(version_dir / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(log.SerializeToString())


@pytest.fixture(scope="module")
def server(testdata: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("behaviour")
    versions = tmp / "versions"
    shutil.copytree(Path(testdata["saved_model_half_plus_two_cpu"]) / "00000123", versions / "1")
    shutil.copytree(Path(testdata["saved_model_half_plus_three"]) / "00000123", versions / "2")
    write_warmup(versions / "2")
    (tmp / "batching.txt").write_text(BATCHING)
    (tmp / "monitoring.txt").write_text('prometheus_config { enable: true path: "/metrics" }')
    (tmp / "models.config").write_text(
        f"""model_config_list {{
  config {{ name: "hp" base_path: "{testdata["saved_model_half_plus_two_cpu"]}" model_platform: "tensorflow"
           version_labels {{ key: "stable" value: 123 }} }}
  config {{ name: "versions" base_path: "{versions}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }} }}
  config {{ name: "bad" base_path: "{testdata["bad_half_plus_two"]}" model_platform: "tensorflow" }}
}}
"""
    )
    s = Server(
        f"--model_config_file={tmp / 'models.config'}",
        f"--max_request_bytes={MAX_BYTES}",
        "--enable_batching",
        f"--batching_parameters_file={tmp / 'batching.txt'}",
        f"--monitoring_config_file={tmp / 'monitoring.txt'}",
    )
    s.tmp = tmp  # type: ignore[attr-defined]
    yield s.wait()
    s.stop()


def predict(server: Server, path: str, body: object) -> requests.Response:
    return server.post(f"/v1/models/{path}:predict", body)


# ------------------------------------------------------------------------------------ bad requests: 4xx
@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"instances": [1.0,', 400, "JSON Parse error"),
        (b"[1, 2]", 400, "Is not object"),
        (b"", 400, "The document is empty"),
        (b'{"instances": ["a"]}', 400, "is not of expected type: float32"),
        (b'{"instances": [true]}', 400, "is not of expected type: float32"),
        (b'{"instances": [[1.0, 2.0], [3.0]]}', 400, "dense"),
        (b'{"instances": []}', 400, "No values in 'instances' array"),
        (b'{"instances": [1.0], "inputs": [1.0]}', 400, "expecting only one of 'inputs' or 'instances'"),
        (b'{"nothing": 1}', 400, "Missing 'inputs' or 'instances' key"),
        (b'{"signature_name": "nope", "instances": [1.0]}', 400, 'Serving signature name: "nope" not found'),
        (b'{"signature_name": 3, "instances": [1.0]}', 400, "'signature_name' key must be a string"),
        (b'{"instances": [{"x": 1.0, "y": 2.0}]}', 400, "does not have named input: y"),
        (b'{"instances": [{"b64": "!!!"}]}', 400, "not of expected type"),
    ],
)
def test_malformed_predict_is_4xx(server: Server, body: bytes, status: int, message: str) -> None:
    r = requests.post(f"{server.rest}/v1/models/hp:predict", data=body, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_nan_and_infinity_are_accepted_and_written(server: Server) -> None:
    r = requests.post(
        f"{server.rest}/v1/models/hp:predict", data=b'{"instances": [NaN, Infinity, 2.0]}', timeout=30
    )
    assert r.status_code == 200, r.text
    assert r.text.replace(" ", "") == '{"predictions":[NaN,Infinity,3.0]}'


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/hp/versions/7:predict", 404, "Servable not found for request: Specific(hp, 7)"),
        ("/v1/models/hp/labels/nope:predict", 400, "Unrecognized servable version label: nope"),
        ("/v1/models/hp:explain", 400, "Malformed request"),
        ("/v1/models/bad:predict", 400, "bad_half_plus_two"),
    ],
)
def test_unknown_models_versions_and_methods(server: Server, path: str, status: int, message: str) -> None:
    r = server.post(path, {"instances": [1.0]})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_grpc_wrong_dtype_is_invalid_argument(server: Server) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp"
    request.inputs["x"].dtype = types_pb2.DT_STRING
    request.inputs["x"].string_val.append(b"two")
    request.inputs["x"].tensor_shape.dim.add().size = 1
    with grpc.insecure_channel(server.grpc) as ch, pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, 20)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_body_gets_413_without_being_read(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n" + b"[" * 1000
        )
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert "exceeds the limit of 100000 bytes" in reply
    # and over gRPC
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.extend([1.0] * 50_000)
    request.inputs["x"].tensor_shape.dim.add().size = 50_000
    with grpc.insecure_channel(server.grpc) as ch, pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, 20)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: chunked\r\n\r\n-10\r\n",  # used to loop the event loop forever
        b"Transfer-Encoding: chunked\r\n\r\n+a\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n1_e\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n0x1e\r\n",
        b"Content-Length: -1\r\n\r\n",
        b"Content-Length: +30\r\n\r\n",
        b"Content-Length: 3_0\r\n\r\n",
    ],
)
def test_malformed_lengths_get_400_and_the_server_keeps_serving(server: Server, framing: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\n" + framing)
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 400"), reply
    assert predict(server, "hp", {"instances": [2.0]}).json() == {"predictions": [3.0]}


def test_bad_model_status_and_others_keep_serving(server: Server) -> None:
    st = server.get("/v1/models/bad").json()["model_version_status"][0]
    assert st["version"] == "123" and st["state"] == "END"
    assert st["status"]["error_code"] != "OK" and "bad_half_plus_two" in st["status"]["error_message"]
    assert predict(server, "hp", {"instances": [2.0]}).json() == {"predictions": [3.0]}


# ------------------------------------------------------------------------------- versions, labels, warm-up
def test_labels_versions_and_policy_all(server: Server) -> None:
    assert predict(server, "hp/labels/stable", {"instances": [2.0]}).json() == {"predictions": [3.0]}
    assert predict(server, "versions/versions/1", {"instances": [2.0]}).json() == {"predictions": [3.0]}
    assert predict(server, "versions/versions/2", {"instances": [2.0]}).json() == {"predictions": [4.0]}
    assert predict(server, "versions", {"instances": [2.0]}).json() == {"predictions": [4.0]}  # latest
    states = server.get("/v1/models/versions").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in states] == [("1", "AVAILABLE"), ("2", "AVAILABLE")]
    assert "Model versions version 2: replayed 1 warm-up requests" in server.log


# ----------------------------------------------------------------------------------- batching, shedding
def test_concurrent_requests_are_batched(server: Server) -> None:
    before = _metric(server, 'processed_batch_size_count{model_name="hp"}')
    # the server's own queuing-latency histogram: requests that waited less than the batch timeout
    within = f'queuing_latency_bucket{{model_name="hp",le="{BATCH_TIMEOUT_S * 1e6:g}"}}'
    before_within = _metric(server, within)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda x: predict(server, "hp", {"instances": [x]}), [2.0, 4.0, 6.0, 8.0]))
    assert [r.json()["predictions"] for r in replies] == [[3.0], [4.0], [5.0], [6.0]]
    # 4 rows fill max_batch_size: one model call, run as the batch filled, before the timeout would fire
    assert _metric(server, 'processed_batch_size_count{model_name="hp"}') == before + 1
    assert _metric(server, 'processed_batch_size_bucket{model_name="hp",le="4"}') >= 1
    assert _metric(server, within) == before_within + 4


def test_full_queue_sheds_load_with_429(server: Server) -> None:
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(predict, server, "hp", {"instances": [1.0, 2.0, 3.0]})  # waits for a 4th row
        time.sleep(0.1)
        second = predict(server, "hp", {"instances": [1.0, 2.0, 3.0]})
        assert second.status_code == 429, second.text
        assert "queue" in second.json()["error"] and "full" in second.json()["error"]
        assert first.result().json() == {"predictions": [2.5, 3.0, 3.5]}


def _metric(server: Server, needle: str) -> float:
    r = server.get("/metrics")
    assert r.status_code == 200
    for line in r.text.splitlines():
        if needle in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -------------------------------------------------------------------------------------- reload, SIGTERM
def test_handle_reload_config_request(server: Server, testdata: dict[str, str]) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    for name, path in (
        ("hp", testdata["saved_model_half_plus_two_cpu"]),
        ("three", testdata["saved_model_half_plus_three"]),
    ):
        c = request.config.model_config_list.config.add()
        c.name, c.base_path, c.model_platform = name, path, "tensorflow"
    with grpc.insecure_channel(server.grpc) as ch:
        reply = model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(request, 60)
    assert reply.status.error_code == 0, reply.status.error_message
    assert predict(server, "three", {"instances": [2.0]}).json() == {"predictions": [4.0]}
    assert predict(server, "versions", {"instances": [2.0]}).status_code == 404  # no longer configured


def grpc_predict(target: str, model: str, x: float) -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(x)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    with grpc.insecure_channel(target) as ch:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, 20)
    return list(reply.outputs["y"].float_val)


def test_sigterm_drains_in_flight_requests_and_exits_0(server: Server) -> None:
    with ThreadPoolExecutor(2) as pool:
        # both held by the batch timeout when SIGTERM arrives
        rest = pool.submit(predict, server, "hp", {"instances": [2.0]})
        rpc = pool.submit(grpc_predict, server.grpc, "hp", 4.0)
        time.sleep(0.2)
        code = server.stop(timeout=30)  # killed (-9) if it has not exited by then
        assert rest.result().json() == {"predictions": [3.0]}
        assert rpc.result() == [4.0]
    assert code == 0, server.log[-3000:]  # it drained and exited by itself, not at stop()'s kill


def test_uvloop_event_loop_serves_rest_and_grpc(testdata: dict[str, str]) -> None:
    """--event_loop=uvloop: the same server on uvloop, both protocols, and SIGTERM still exits 0."""
    pytest.importorskip("uvloop")
    server = Server(
        "--model_name=hp",
        f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}",
        "--event_loop=uvloop",
    ).wait()
    try:
        assert grpc_predict(server.grpc, "hp", 2.0) == [3.0]
        assert predict(server, "hp", {"instances": [4.0]}).json() == {"predictions": [4.0]}
    finally:
        assert server.stop() == 0


def test_grpcio_frontend_serves_the_same_api(testdata: dict[str, str], tmp_path: Path) -> None:
    """--grpc_frontend=grpcio: grpcio's own server, with its channel arguments, answers the same methods."""
    sock = tmp_path / "grpcio.sock"
    server = Server(
        "--model_name=hp",
        f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}",
        "--grpc_frontend=grpcio",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=60000",
        f"--grpc_socket_path={sock}",
    ).wait()
    try:
        assert grpc_predict(server.grpc, "hp", 2.0) == [3.0]
        assert grpc_predict(f"unix:{sock}", "hp", 4.0) == [4.0]
        with pytest.raises(grpc.RpcError) as info:
            grpc_predict(server.grpc, "nope", 1.0)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        assert server.stop() == 0

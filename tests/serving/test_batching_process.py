"""--batching_process: batched calls run in a child process per model version, driven from the event loop.
Each of many concurrent requests must get its own answer, errors keep their status, and the child goes
away with the server."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from .conftest import Server

BATCHING = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
"""


@pytest.fixture(scope="module")
def server(testdata: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("batching_process")
    (tmp / "batching.txt").write_text(BATCHING)
    (tmp / "monitoring.txt").write_text('prometheus_config { enable: true path: "/metrics" }')
    s = Server(
        "--model_name=hp",
        f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}",
        "--enable_batching",
        f"--batching_parameters_file={tmp / 'batching.txt'}",
        "--batching_process",
        f"--monitoring_config_file={tmp / 'monitoring.txt'}",
    ).wait()
    yield s
    s.stop()


def children(path: str = "") -> list[str]:
    """pids of running model processes (for the export under `path`)."""
    pattern = f"tfpredict.serving.model_process {path}" if path else "tfpredict.serving.model_process"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return out.stdout.split()


def cpu_seconds(pid: int, over: float) -> float:
    """CPU time a process uses in the next `over` seconds."""

    def used() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    start = used()
    time.sleep(over)
    return used() - start


def grpc_predict(target: str, x: float) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(x)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    with grpc.insecure_channel(target) as ch:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, 30)
    return reply.outputs["y"].float_val[0]


def test_concurrent_requests_each_get_their_own_answer(server: Server) -> None:
    xs = [float(i) for i in range(48)]
    with ThreadPoolExecutor(24) as pool:
        rest = list(
            pool.map(
                lambda x: requests.post(
                    f"{server.rest}/v1/models/hp:predict", json={"instances": [x]}
                ).json(),
                xs,
            )
        )
        rpc = list(pool.map(lambda x: grpc_predict(server.grpc, x), xs))
    assert rest == [{"predictions": [0.5 * x + 2]} for x in xs]
    assert rpc == [0.5 * x + 2 for x in xs]
    metrics = requests.get(f"{server.rest}/metrics").text
    batched = [ln for ln in metrics.splitlines() if "processed_batch_size_count" in ln]
    sums = [ln for ln in metrics.splitlines() if "processed_batch_size_sum" in ln]
    assert batched and float(sums[0].split()[-1]) > float(batched[0].split()[-1])  # > 1 row per call


def test_classify_through_the_child(server: Server) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "hp"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    with grpc.insecure_channel(server.grpc) as ch:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(ch).Classify(request, 30)
    assert reply.result.classifications[0].classes[0].score == pytest.approx(3.0)


def test_errors_from_the_child_keep_their_status(server: Server) -> None:
    # a string where the graph's ParseExample wants a float: the error is raised in the child
    doc = {"signature_name": "classify_x_to_y", "examples": [{"x": "abc"}]}
    r = requests.post(f"{server.rest}/v1/models/hp:classify", json=doc)
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert grpc_predict(server.grpc, 4.0) == 4.0  # and the child keeps serving


def test_needs_enable_batching(testdata: dict[str, str]) -> None:
    s = Server(
        "--model_name=hp",
        f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}",
        "--batching_process",
    )
    assert s.proc.wait(60) == 2
    assert "--batching_process runs batched calls: it needs --enable_batching" in s.log


def test_sigterm_stops_the_child_too(server: Server) -> None:
    assert children(), "no model process while serving"
    assert server.stop() == 0, server.log[-2000:]
    assert not children()


def test_model_process_reports_a_load_failure(tmp_path: Path) -> None:
    from tfpredict.errors import ModelLoadError
    from tfpredict.serving.model_process import ModelProcess

    (tmp_path / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(ModelLoadError, match="failed to load"):
        ModelProcess(tmp_path, None, None)


def test_new_version_gets_its_own_child_and_the_old_one_stops(
    testdata: dict[str, str], tmp_path: Path
) -> None:
    """Hot reload with --batching_process: a client loop sees the new version with no failed request, and
    the old version's child exits once its version is unloaded."""
    import shutil
    import threading

    base = tmp_path / "model"
    shutil.copytree(Path(testdata["saved_model_half_plus_two_cpu"]) / "00000123", base / "1")
    (tmp_path / "batching.txt").write_text(BATCHING)
    s = Server(
        "--model_name=hot",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=0.5",
        "--enable_batching",
        f"--batching_parameters_file={tmp_path / 'batching.txt'}",
        "--batching_process",
    ).wait()
    before = set(children(str(base / "1")))
    assert before, "no model process for version 1"
    results: list[tuple[int, object]] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                r = session.post(f"{s.rest}/v1/models/hot:predict", json={"instances": [2.0]}, timeout=30)
                results.append((r.status_code, r.json().get("predictions")))

    loop = threading.Thread(target=client)
    loop.start()
    try:
        time.sleep(0.5)
        shutil.copytree(Path(testdata["saved_model_half_plus_three"]) / "00000123", base / "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p == [4.0] for _s, p in results[-5:]):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        loop.join(30)
    try:
        assert [r for r in results if r[0] != 200] == []
        assert results[0][1] == [3.0] and results[-1][1] == [4.0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and before & set(children()):
            time.sleep(0.1)
        assert not before & set(children()), "version 1's model process is still running"
        assert "model process" not in s.log, s.log[-2000:]  # a version's child stops without an error line
        assert cpu_seconds(s.proc.pid, 1.0) < 0.3  # and the idle server does not spin on its closed pipe
    finally:
        assert s.stop() == 0

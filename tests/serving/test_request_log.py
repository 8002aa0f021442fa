"""logging_config in the model config file, on a real server process: sampled requests are written as
TFRecords of TF Serving's PredictionLog (read back with prediction_log_pb2) or as JSON Lines, with the
inputs and outputs of the requests sent, in files rotated by size; a sampling rate of 0.1 logs about a
tenth of the requests; a log directory that cannot be written stops the server at start-up in one line."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from .conftest import SRC, Server

MONITORING = 'prometheus_config { enable: true path: "/metrics" }\n'
ROTATE_BYTES = 3000


def model_config(models: dict[str, tuple[str, str, float]]) -> str:
    """{name: (base_path, filename_prefix, sampling_rate)} as a ModelServerConfig with logging_config."""
    body = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"\n'
        f'    logging_config {{ log_collector_config {{ filename_prefix: "{prefix}" }}\n'
        f"      sampling_config {{ sampling_rate: {rate} }} }} }}\n"
        for name, (base, prefix, rate) in models.items()
    )
    return "model_config_list {\n" + body + "}\n"


@pytest.fixture(scope="module")
def logged(testdata: dict[str, str], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One server, three models over half_plus_two: all requests to TFRecord, all to JSON Lines, 10%; with
    the response cache on, so the 2,000 identical requests to "sampled" check that cached answers are still
    sampled and logged."""
    tmp = tmp_path_factory.mktemp("request_log")
    base = testdata["saved_model_half_plus_two_cpu"]
    logs = tmp / "logs"
    logs.mkdir()
    config = tmp / "models.conf"
    config.write_text(
        model_config(
            {
                "half": (base, str(logs / "half"), 1.0),
                "halfj": (base, str(logs / "halfj.jsonl"), 1.0),
                "sampled": (base, str(logs / "sampled"), 0.1),
            }
        )
    )
    (tmp / "monitoring.txt").write_text(MONITORING)
    server = Server(
        f"--model_config_file={config}",
        f"--monitoring_config_file={tmp / 'monitoring.txt'}",
        f"--request_log_max_file_bytes={ROTATE_BYTES}",
        "--response_cache_bytes=1000000",
    ).wait()
    sent: dict[str, list[object]] = {"half": [], "halfj": [], "sampled": []}
    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(20):
            for name in ("half", "halfj"):
                r = server.post(f"/v1/models/{name}:predict", json={"instances": [float(i), 1.0]})
                assert r.status_code == 200
                sent[name].append(("predict", [float(i), 1.0], r.json()["predictions"]))
        stub.Predict(_predict_request("half", [7.0]), timeout=20)
        sent["half"].append(("predict", [7.0], [5.5]))
        stub.Classify(_classify_request("half", 4.0), timeout=20)
        sent["half"].append(("classify", 4.0, 4.0))
        r = server.post(
            "/v1/models/halfj:classify", json={"signature_name": "classify_x_to_y", "examples": [{"x": 6.0}]}
        )
        assert r.status_code == 200
        sent["halfj"].append(("classify", 6.0, 5.0))
        bad = server.post("/v1/models/halfj:predict", json={"signature_name": "nope", "instances": [1.0]})
        assert bad.status_code == 400
        sent["halfj"].append(("error", "nope", None))
    for _ in range(2000):
        assert server.post("/v1/models/sampled:predict", json={"instances": [1.0]}).status_code == 200
    time.sleep(0.5)  # the writer drains its queue every 50 ms: the counts below are then final
    metrics = server.get("/metrics").text
    assert server.stop() == 0  # the writer's queue is written out before the process ends
    yield logs, sent, metrics


def _predict_request(model: str, values: list[float]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(values, np.float32)))
    return request


def _classify_request(model: str, x: float) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request


def read_prediction_logs(prefix: Path) -> list[prediction_log_pb2.PredictionLog]:
    files = sorted(glob.glob(f"{prefix}.*.tfrecord"))
    assert files
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for f in files
        for record in tf.data.TFRecordDataset(f)
    ]


def test_tfrecord_prediction_logs_match_the_requests_sent(logged) -> None:
    logs, sent, _ = logged
    records = read_prediction_logs(logs / "half")
    assert len(records) == len(sent["half"])
    for record, (kind, inputs, outputs) in zip(records, sent["half"], strict=True):
        assert record.log_metadata.model_spec.name == "half"
        assert record.log_metadata.model_spec.version.value == 123
        if kind == "predict":
            log = record.predict_log
            assert log.request.model_spec.signature_name == "serving_default"
            assert tf.make_ndarray(log.request.inputs["x"]).tolist() == inputs
            assert tf.make_ndarray(log.response.outputs["y"]).tolist() == outputs
        else:
            log = record.classify_log
            (example,) = log.request.input.example_list.examples
            assert list(example.features.feature["x"].float_list.value) == [inputs]
            (classification,) = log.response.result.classifications
            assert [c.score for c in classification.classes] == [outputs]


def test_tfrecord_files_are_rotated_by_size(logged) -> None:
    logs, _, _ = logged
    files = sorted(glob.glob(f"{logs / 'half'}.*.tfrecord"))
    assert len(files) > 1
    assert all(os.path.getsize(f) < ROTATE_BYTES + 1000 for f in files)  # each ends past the size, once


def test_jsonl_lines_match_the_requests_sent_with_status_and_latency(logged) -> None:
    logs, sent, _ = logged
    files = sorted(glob.glob(f"{logs / 'halfj'}.*.jsonl"))
    lines = [orjson.loads(line) for f in files for line in Path(f).read_bytes().splitlines()]
    assert len(lines) == len(sent["halfj"])
    for line, (kind, inputs, outputs) in zip(lines, sent["halfj"], strict=True):
        assert line["model"] == "halfj" and line["latency_us"] > 0
        if kind == "predict":
            assert (line["status"], line["version"], line["signature"]) == ("OK", 123, "serving_default")
            assert line["inputs"] == {"x": inputs} and line["outputs"] == {"y": outputs}
        elif kind == "classify":
            assert line["inputs"] == {"examples": [{"x": inputs}]}
            assert line["outputs"]["scores"] == [[outputs]]
        else:
            assert line["status"] == "INVALID_ARGUMENT" and "nope" in line["message"]


def test_a_sampling_rate_of_a_tenth_logs_a_tenth(logged) -> None:
    logs, _, metrics = logged
    n = len(read_prediction_logs(logs / "sampled"))
    assert 0.075 <= n / 2000 <= 0.125, n
    assert f':tfpredict:serving:request_log{{model_name="sampled",result="written"}} {n}' in metrics


def test_an_unwritable_log_directory_fails_at_start_up(tmp_path: Path, testdata: dict[str, str]) -> None:
    config = tmp_path / "models.conf"
    prefix = tmp_path / "no" / "such" / "dir" / "log"
    config.write_text(model_config({"half": (testdata["saved_model_half_plus_two_cpu"], str(prefix), 0.5)}))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "tfpredict", "serve", f"--model_config_file={config}", "--port=0"]
    cmd.append("--rest_api_port=8")  # never bound: the log file fails first
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0
    assert "Could not open request log file" in out.stderr and str(prefix) in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    """The request path's side in-process: 20,000 entries put at once into the 4,096-entry queue, real
    writer thread and file; nothing blocks, and every entry is either a line in the file or a drop."""
    from tfpredict.serving.config import ModelConfig, RequestLogConfig
    from tfpredict.serving.inference import tensors_call
    from tfpredict.serving.metrics import Metrics
    from tfpredict.serving.request_log import LogEntry, RequestLog

    metrics = Metrics()
    config = ModelConfig("m", "/unused", logging=RequestLogConfig(str(tmp_path / "m.jsonl"), 1.0, "jsonl"))
    log = RequestLog.for_models([config], metrics, 1 << 30)
    assert log is not None
    call = tensors_call("serving_default", {"x": np.ones(2, np.float32)})
    entry = LogEntry("predict", "m", 1, "serving_default", None, call, {"y": np.ones(2)}, "OK", "", 5.0, 0.0)
    n = 20_000
    for _ in range(n):
        log.record(entry)
    log.close()
    lines = [
        line for f in glob.glob(f"{tmp_path / 'm'}.*.jsonl") for line in Path(f).read_bytes().splitlines()
    ]
    written, dropped = metrics.request_log.value("m", "written"), metrics.request_log.value("m", "dropped")
    assert dropped > 0
    assert written == len(lines) and written + dropped == n
    assert orjson.loads(lines[-1])["outputs"] == {"y": [1.0, 1.0]}

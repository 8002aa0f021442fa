"""--response_cache_bytes on real server processes: repeated requests are answered from the cache (the same
answer, over REST and gRPC, without entering the batch queue), the cache stays within its bound in
bytes (LRU evictions), and a new model version is never answered from the old one's entries."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from .conftest import Server

MONITORING = 'prometheus_config { enable: true path: "/metrics" }\n'
BATCHING = "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\n"


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of a Prometheus series' samples whose labels include `labels`."""
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head = line.rsplit(" ", 1)[0]
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def cache(server: Server, event: str) -> float:
    return metric(server, ":tfpredict:serving:response_cache", event=event)


def predict(server: Server, values: list[float], model: str = "half") -> list[float]:
    r = server.post(f"/v1/models/{model}:predict", json={"instances": values})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]  # type: ignore[no-any-return]


def grpc_predict(server: Server, values: list[float], model: str = "half") -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = len(values)
    request.inputs["x"].float_val.extend(values)
    with grpc.insecure_channel(server.grpc) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=20)
    return list(response.outputs["y"].float_val)


@pytest.fixture(scope="module")
def servers(testdata: dict[str, str], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("cache")
    (tmp / "monitoring.txt").write_text(MONITORING)
    (tmp / "batching.txt").write_text(BATCHING)
    base = tmp / "versions"
    shutil.copytree(Path(testdata["saved_model_half_plus_two_cpu"]) / "00000123", base / "1")
    common = [f"--monitoring_config_file={tmp / 'monitoring.txt'}", "--model_name=half"]
    half = f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}"
    started = {
        "batching": Server(
            *common,
            half,
            "--response_cache_bytes=1000000",
            "--enable_batching",
            f"--batching_parameters_file={tmp / 'batching.txt'}",
        ),
        "small": Server(*common, half, "--response_cache_bytes=20000"),
        "versions": Server(
            *common,
            f"--model_base_path={base}",
            "--response_cache_bytes=1000000",
            "--file_system_poll_wait_seconds=0.3",
        ),
    }
    yield started, base, testdata
    for s in started.values():
        s.stop()


def test_a_repeated_request_is_a_hit_and_never_batched(servers) -> None:
    server = servers[0]["batching"].wait()
    batches = metric(server, ":tensorflow:serving:batching_session:processed_batch_size_count")
    assert predict(server, [1.0, 2.0]) == [2.5, 3.0]
    assert (cache(server, "miss"), cache(server, "hit")) == (1, 0)
    batched = metric(server, ":tensorflow:serving:batching_session:processed_batch_size_count")
    assert batched == batches + 1
    for _ in range(5):
        assert predict(server, [1.0, 2.0]) == [2.5, 3.0]
    assert (cache(server, "miss"), cache(server, "hit")) == (1, 5)
    assert metric(server, ":tensorflow:serving:batching_session:processed_batch_size_count") == batched
    # gRPC is keyed on the tensor's bytes, REST on the body's: the first gRPC call is a miss of its own
    assert grpc_predict(server, [1.0, 2.0]) == [2.5, 3.0]
    assert grpc_predict(server, [1.0, 2.0]) == [2.5, 3.0]
    assert (cache(server, "miss"), cache(server, "hit")) == (2, 6)
    assert metric(server, ":tensorflow:serving:batching_session:processed_batch_size_count") == batched + 1
    assert predict(server, [1.0, 4.0]) == [2.5, 4.0]  # other inputs: a miss, a model call
    assert predict(server, [1.0]) == [2.5]  # another shape
    assert (cache(server, "miss"), cache(server, "hit")) == (4, 6)
    assert metric(server, ":tensorflow:serving:batching_session:processed_batch_size_count") == batched + 3


def test_a_replayed_body_gets_the_same_bytes_and_a_reformatted_one_the_same_answer(servers) -> None:
    """REST keeps the rendered answer under the body as sent: a replay gets the same bytes, without a
    model call; the same JSON spelled differently is a miss of its own, with the same answer."""
    server = servers[0]["batching"].wait()
    headers = {"Content-Type": "application/json"}
    sent = b'{"instances": [5.0, 6.0]}'

    def post(body: bytes):  # type: ignore[no-untyped-def]
        r = server.post("/v1/models/half:predict", data=body, headers=headers)
        assert r.status_code == 200, r.text
        return r

    def batches() -> float:
        return metric(server, ":tensorflow:serving:batching_session:processed_batch_size_count")

    misses, hits = cache(server, "miss"), cache(server, "hit")
    first = post(sent)
    assert first.json()["predictions"] == [4.5, 5.0]
    assert (cache(server, "miss"), cache(server, "hit")) == (misses + 1, hits)
    batched = batches()
    assert post(sent).content == first.content
    assert (cache(server, "miss"), cache(server, "hit")) == (misses + 1, hits + 1)
    assert batches() == batched
    assert post(b'{ "instances" : [5.0,6.0] }').json() == first.json()
    assert (cache(server, "miss"), cache(server, "hit")) == (misses + 2, hits + 1)
    assert batches() == batched + 1
    missing = server.post("/v1/models/nope:predict", data=sent, headers=headers)
    assert missing.status_code == 404 and "nope" in missing.text


def test_the_cache_stays_within_its_bound(servers) -> None:
    server = servers[0]["small"].wait()
    for i in range(100):
        assert predict(server, [float(i)]) == [i / 2 + 2]
    held = metric(server, ":tfpredict:serving:response_cache_bytes")
    assert 0 < held <= 20000
    assert cache(server, "eviction") > 0
    assert cache(server, "miss") == 100
    assert predict(server, [99.0]) == [51.5]  # the newest entry is kept ...
    assert cache(server, "hit") == 1
    assert predict(server, [0.0]) == [2.0]  # ... the oldest was evicted
    assert cache(server, "miss") == 101


def test_a_new_version_is_not_answered_from_the_old_ones_entries(servers) -> None:
    started, base, testdata = servers
    server = started["versions"].wait()
    assert predict(server, [2.0]) == [3.0]
    assert predict(server, [2.0]) == [3.0]
    assert cache(server, "hit") == 1
    shutil.copytree(Path(testdata["saved_model_half_plus_three"]) / "00000123", base / "2")
    deadline = time.monotonic() + 60
    while predict(server, [2.0]) != [4.0]:  # half_plus_three as version 2
        assert time.monotonic() < deadline, server.log[-2000:]
        time.sleep(0.2)
    hits = cache(server, "hit")
    assert predict(server, [2.0]) == [4.0]
    assert cache(server, "hit") == hits + 1  # version 2's own entry
    deadline = time.monotonic() + 30
    while cache(server, "invalidation") < 1:  # version 1 unloaded: its entry is dropped at the next sweep
        assert time.monotonic() < deadline
        predict(server, [time.monotonic()])  # misses, whose puts run the sweep
        time.sleep(0.3)

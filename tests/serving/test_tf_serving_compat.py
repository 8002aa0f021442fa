"""TF Serving's own tensorflow_model_server_test.py cases (those that apply to one model server), against
real `tfpredict serve` processes, with the tensorflow-serving-api gRPC client and `requests`.

Each test names the TF Serving test it ports; expected values and JSON are TF Serving's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from .conftest import SRC, Server

RPC_TIMEOUT = 20.0
VERSION = 123
MONITORING_CONFIG = 'prometheus_config: {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n'
# TF Serving's testdata/batching_config.txt
BATCHING_CONFIG = (
    "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
    "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n"
)
METADATA_JSON = Path(__file__).parent / "half_plus_two_model_metadata.json"


def config_text(models: dict[str, str]) -> str:
    body = "".join(
        f'  config: {{\n    name: "{name}",\n    base_path: "{path}",\n'
        '    model_platform: "tensorflow"\n  }\n'
        for name, path in models.items()
    )
    return "model_config_list: {\n" + body + "}\n"


@pytest.fixture(scope="module")
def servers(testdata: dict[str, str], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """All servers of this module, started side by side (TF import and model loads overlap)."""
    tmp = tmp_path_factory.mktemp("compat")
    (tmp / "monitoring_config.txt").write_text(MONITORING_CONFIG)
    (tmp / "batching_config.txt").write_text(BATCHING_CONFIG)
    good = tmp / "good_model_config.conf"
    good.write_text(
        config_text(
            {
                "default": testdata["saved_model_half_plus_two_tf2_cpu"],  # TF Serving's *Tf2 tests
                "half_plus_two": testdata["saved_model_half_plus_two_cpu"],
                "half_plus_three": testdata["saved_model_half_plus_three"],
                "bad": testdata["bad_half_plus_two"],
                "tf_saved_model_save": testdata["tf_saved_model_save"],
                "multiple_signatures": testdata["tf_saved_model_save_multiple_signatures"],
                "keras_sequential": testdata["keras_sequential_saved_model_save"],
                "distrat": testdata["distrat_keras_sequential_saved_model_save"],
            }
        )
    )
    reload_cfg = tmp / "model_config.txt"
    reload_cfg.write_text(config_text({"half_plus_two": testdata["saved_model_half_plus_two_cpu"]}))
    started = {
        "tf1": Server(
            "--model_name=default",
            f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}",
            f"--monitoring_config_file={tmp / 'monitoring_config.txt'}",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
            f"--grpc_socket_path={tmp / 'tf-serving.sock'}",
        ),
        "config": Server(f"--model_config_file={good}"),
        "batching": Server(
            "--model_name=default",
            f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}",
            "--enable_batching",
            f"--batching_parameters_file={tmp / 'batching_config.txt'}",
        ),
        "reload": Server(f"--model_config_file={reload_cfg}", "--model_config_file_poll_wait_seconds=1"),
    }
    started["reload"].config_path = reload_cfg  # type: ignore[attr-defined]
    started["tf1"].socket_path = tmp / "tf-serving.sock"  # type: ignore[attr-defined]
    started["config"].config_path = good  # type: ignore[attr-defined]
    started["tf2"] = started["config"]  # its model "default" is the TF2 half_plus_two
    yield started
    for s in started.values():
        if s.proc.poll() is None:
            s.proc.terminate()
    for s in started.values():
        s.stop()


def verify_predict(
    address: str,
    expected_output: float,
    expected_version: int = VERSION,
    model_name: str = "default",
    specify_output: bool = True,
    batch_input: bool = False,
    signature_name: str = "serving_default",
) -> None:
    """TensorflowModelServerTestBase.VerifyPredictRequest."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


def verify_model_spec(spec, name: str, signature: str, version: int) -> None:  # type: ignore[no-untyped-def]
    assert spec.name == name
    assert spec.signature_name == signature
    assert spec.version.value == version


def stub(address: str) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


# ---------------------------------------------------------------------------------------------- gRPC
def test_get_model_status(servers) -> None:  # testGetModelStatus
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    with grpc.insecure_channel(servers["tf1"].wait().grpc) as channel:
        result = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0
    assert result.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_get_model_metadata(servers) -> None:  # testGetModelMetadata
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = stub(servers["tf1"].wait().grpc).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == VERSION
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata
    sigs = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(sigs)
    assert sigs.signature_def["serving_default"].inputs["x"].name == "x:0"


@pytest.mark.parametrize("which", ["tf1", "tf2"])
def test_classify(servers, which: str) -> None:  # testClassify, testClassifyTf2
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = stub(servers[which].wait().grpc).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


@pytest.mark.parametrize("which", ["tf1", "tf2"])
def test_regress(servers, which: str) -> None:  # testRegress, testRegressTf2
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = stub(servers[which].wait().grpc).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", VERSION)


@pytest.mark.parametrize("which", ["tf1", "tf2"])
def test_multi_inference(servers, which: str) -> None:  # testMultiInference, testMultiInferenceTf2
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = stub(servers[which].wait().grpc).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(
            result.results[i].model_spec, "default", request.tasks[i].model_spec.signature_name, VERSION
        )


@pytest.mark.parametrize("which", ["tf1", "batching"])
def test_predict_saved_model(servers, which: str) -> None:  # testPredictSavedModel, _TestPredict + batching
    address = servers[which].wait().grpc
    verify_predict(address, expected_output=3.0)
    verify_predict(address, expected_output=3.0, specify_output=False)


def test_bad_model(servers) -> None:  # _TestBadModel (here beside good models, which keep serving)
    address = servers["config"].wait().grpc
    with pytest.raises(grpc.RpcError) as info:
        verify_predict(address, expected_output=3.0, model_name="bad", signature_name="")
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "bad_half_plus_two" in info.value.details()
    verify_predict(address, model_name="half_plus_two", expected_output=3.0)
    # the one clear line naming the model and path
    lines = [ln for ln in servers["config"].log.splitlines() if "failed to load" in ln]
    assert len(lines) == 1 and "Model bad version 123" in lines[0] and "bad_half_plus_two" in lines[0]


def test_good_model_config(servers) -> None:  # testGoodModelConfig
    address = servers["config"].wait().grpc
    verify_predict(address, model_name="half_plus_two", expected_output=3.0)
    verify_predict(address, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    verify_predict(address, model_name="half_plus_three", expected_output=4.0)
    verify_predict(address, model_name="half_plus_three", expected_output=4.0, specify_output=False)


def test_bad_model_config(tmp_path: Path) -> None:  # testBadModelConfig
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("improperly formatted file")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfpredict",
            "serve",
            f"--model_config_file={bad}",
            "--port=0",
            "--rest_api_port=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_config_reload(servers, testdata) -> None:  # testModelConfigReload
    server = servers["reload"].wait()
    verify_predict(server.grpc, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    server.config_path.write_text(config_text({"half_plus_three": testdata["saved_model_half_plus_three"]}))
    deadline = time.monotonic() + 10
    while True:
        try:
            verify_predict(
                server.grpc, model_name="half_plus_three", expected_output=4.0, specify_output=False
            )
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_model_config_reload_with_zero_poll_period(servers, testdata) -> None:  # ...WithZeroPollPeriod
    server = servers["config"].wait()  # started with the default --model_config_file_poll_wait_seconds=0
    verify_predict(server.grpc, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    original = server.config_path.read_text()
    server.config_path.write_text(config_text({"half_plus_three": testdata["saved_model_half_plus_three"]}))
    try:
        time.sleep(0 + 1)
        verify_predict(server.grpc, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    finally:
        server.config_path.write_text(original)


def test_good_grpc_channel_args(servers) -> None:  # testGoodGrpcChannelArgs
    verify_predict(servers["tf1"].wait().grpc, expected_output=3.0, specify_output=False)


def test_predict_uds(servers) -> None:  # testPredictUDS
    server = servers["tf1"].wait()
    verify_predict(f"unix:{server.socket_path}", expected_output=3.0, specify_output=False)


def test_tf_saved_model_save(servers) -> None:  # test_tf_saved_model_save
    verify_predict(
        servers["config"].wait().grpc,
        model_name="tf_saved_model_save",
        expected_output=12.0,
        specify_output=False,
    )


def test_tf_saved_model_save_multiple_signatures(
    servers,
) -> None:  # test_tf_saved_model_save_multiple_signatures
    address = servers["config"].wait().grpc
    verify_predict(
        address, model_name="multiple_signatures", expected_output=2.0, signature_name="custom_signature_key"
    )
    verify_predict(address, model_name="multiple_signatures", expected_output=1.0)


def test_sequential_keras_saved_model_save(servers) -> None:  # test_sequential_keras_saved_model_save
    verify_predict(
        servers["config"].wait().grpc,
        model_name="keras_sequential",
        batch_input=True,
        specify_output=False,
        expected_output=2.0,
    )


def test_distrat_sequential_keras_saved_model_save(servers) -> None:  # test_distrat_sequential_keras_...
    verify_predict(
        servers["config"].wait().grpc,
        model_name="distrat",
        batch_input=True,
        specify_output=False,
        expected_output=2.0,
    )


# ---------------------------------------------------------------------------------------------- REST
def test_classify_rest(servers) -> None:  # testClassifyREST
    r = (
        servers["tf1"]
        .wait()
        .post("/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    )
    assert r.status_code == 200, r.text
    assert json.loads(r.content) == {"results": [[["", 3.0]]]}


def test_regress_rest(servers) -> None:  # testRegressREST
    r = (
        servers["tf1"]
        .wait()
        .post("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    )
    assert r.status_code == 200, r.text
    assert json.loads(r.content) == {"results": [3.0]}


def test_predict_rest(servers) -> None:  # testPredictREST
    r = servers["tf1"].wait().post("/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert r.status_code == 200, r.text
    assert json.loads(r.content) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(servers) -> None:  # testPredictColumnarREST
    r = servers["tf1"].wait().post("/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert r.status_code == 200, r.text
    assert json.loads(r.content) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(servers) -> None:  # testGetStatusREST
    r = servers["tf1"].wait().get("/v1/models/default")
    assert r.status_code == 200, r.text
    assert json.loads(r.content) == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def sorted_object(obj):  # type: ignore[no-untyped-def]
    """tensorflow_model_server_test_base.SortedObject."""
    if isinstance(obj, dict):
        return sorted((k, sorted_object(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sorted(sorted_object(x) for x in obj)
    return obj


def test_get_model_metadata_rest(servers) -> None:  # testGetModelMetadataREST
    r = servers["tf1"].wait().get("/v1/models/default/metadata")
    assert r.status_code == 200, r.text
    expected = json.loads(METADATA_JSON.read_text())
    # TF Serving's checked-in model was written by TF 1.x, whose build_tensor_info recorded the [None]
    # tf_example placeholder as unknown rank; TF 2.x records its shape, [-1].
    for sig in expected["metadata"]["signature_def"]["signature_def"].values():
        for info in sig["inputs"].values():
            if info["name"] == "tf_example:0":
                info["tensor_shape"] = {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert sorted_object(json.loads(r.content)) == sorted_object(expected)


def test_prometheus_endpoint(servers) -> None:  # testPrometheusEndpoint
    server = servers["tf1"].wait()
    server.post("/v1/models/default:predict", {"instances": [2.0]})
    r = server.get("/monitoring/prometheus/metrics")
    assert r.status_code == 200
    assert "# TYPE" in r.text
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"}' in r.text
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="default",API="predict",entrypoint="REST"'
        in r.text
    )

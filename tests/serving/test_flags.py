"""tensorflow_model_server 2.20's flags: the server starts with every one of them set and serves; each
implemented flag's effect is shown against a server without it (real processes, real exports made at
test time), or on the session TensorFlow really runs with (the flags parsed by the CLI's own parser)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfpredict.cli.main import build_parser, main
from tfpredict.cli.serve import options_from
from tfpredict.cli.serve_flags import IGNORED, TF_SERVING_FLAGS
from tfpredict.serving.health import SERVING, HealthCheckRequest, HealthCheckResponse
from tfpredict.serving.loading import predictor_factory

from .certs import make_pki
from .conftest import Server
from .load_models import broken_model, export_gated, gated_model

# tensorflow_serving/model_servers/main.cc at 2.20.0, in its order (written out here, not read from ours).
MAIN_CC_2_20 = """port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms
rest_api_enable_cors_support enable_batching allow_version_labels_for_unavailable_models
batching_parameters_file enable_per_model_batching_parameters model_config_file
model_config_file_poll_wait_seconds model_name model_base_path num_load_threads num_unload_threads
max_num_load_retries load_retry_interval_micros file_system_poll_wait_seconds flush_filesystem_caches
tensorflow_session_parallelism tensorflow_session_config_file tensorflow_intra_op_parallelism
tensorflow_inter_op_parallelism use_alts_credentials ssl_config_file platform_config_file
per_process_gpu_memory_fraction saved_model_tags grpc_channel_arguments grpc_max_threads enable_model_warmup
num_request_iterations_for_warmup version monitoring_config_file remove_unused_fields_from_bundle_metagraph
prefer_tflite_model num_tflite_pools num_tflite_interpreters_per_pool enable_signature_method_name_check
xla_cpu_compilation_enabled xla_gpu_compilation_enabled enable_profiler thread_pool_factory_config_file
mixed_precision skip_initialize_tpu enable_grpc_healthcheck_service
enable_serialization_as_tensor_content""".split()


def test_the_table_has_every_flag_of_main_cc() -> None:
    assert [f.name for f in TF_SERVING_FLAGS] == [n for n in MAIN_CC_2_20 if n != "version"]


# ------------------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An open gated model (answers at once), and a file its requests name."""
    root = tmp_path_factory.mktemp("flag_models")
    base, gate = gated_model(root, "gated")
    gate.open()
    return {"root": root, "base": base, "gate": gate, "file": str(gate.path)}


def config_file(path: Path, models: dict[str, Path], labels: dict[str, int] | None = None) -> Path:
    lines = ["model_config_list {"]
    for name, base in models.items():
        lines.append(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"')
        for label, version in (labels or {}).items():
            lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        lines.append("  }")
    path.write_text("\n".join([*lines, "}"]) + "\n")
    return path


def predict(server: Server, rows: list[str], model: str = "gated", **kw: Any) -> requests.Response:
    return server.post(f"/v1/models/{model}:predict", {"instances": [{"path": r} for r in rows]}, **kw)


def grpc_predict(channel: grpc.Channel, path: str) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gated"
    request.inputs["path"].dtype = 7  # DT_STRING
    request.inputs["path"].tensor_shape.dim.add().size = 1
    request.inputs["path"].string_val.append(path.encode())
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


# ------------------------------------------------------------------------------------ every flag set
def test_every_flag_set_to_a_valid_value_and_it_serves(models: dict[str, Any], tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    base = tmp_path / "all"
    shutil.copytree(models["base"], base)
    (base / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 8 }\n")
    files = {
        "batching": "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\n"
        "num_batch_threads { value: 2 }\nallowed_batch_sizes: [4, 16]\n",
        "monitoring": 'prometheus_config { enable: true path: "/metrics" }\n',
        "session": "intra_op_parallelism_threads: 2\ninter_op_parallelism_threads: 1\n",
        "thread_pool": "",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.pbtxt").write_text(text)
    values = {
        "grpc_socket_path": str(tmp_path / "grpc.sock"),
        "rest_api_num_threads": "4",
        "rest_api_timeout_in_ms": "20000",
        "rest_api_enable_cors_support": "true",
        "enable_batching": "true",
        "allow_version_labels_for_unavailable_models": "true",
        "batching_parameters_file": str(tmp_path / "batching.pbtxt"),
        "enable_per_model_batching_parameters": "true",
        "model_config_file": str(config_file(tmp_path / "models.pbtxt", {"gated": base}, {"stable": 1})),
        "model_config_file_poll_wait_seconds": "60",
        "model_name": "ignored_with_the_config_file",
        "model_base_path": str(base),
        "num_load_threads": "2",
        "num_unload_threads": "1",
        "max_num_load_retries": "1",
        "load_retry_interval_micros": "1000000",
        "file_system_poll_wait_seconds": "1",
        "flush_filesystem_caches": "false",
        "tensorflow_session_parallelism": "2",
        "tensorflow_session_config_file": str(tmp_path / "session.pbtxt"),
        "tensorflow_intra_op_parallelism": "2",
        "tensorflow_inter_op_parallelism": "0",
        "use_alts_credentials": "false",
        "ssl_config_file": str(pki.ssl_config(False)),
        "platform_config_file": "",
        "per_process_gpu_memory_fraction": "0.5",
        "saved_model_tags": "serve",
        "grpc_channel_arguments": "grpc.max_connection_age_ms=60000",
        "grpc_max_threads": "8",
        "enable_model_warmup": "true",
        "num_request_iterations_for_warmup": "2",
        "version": "false",
        "monitoring_config_file": str(tmp_path / "monitoring.pbtxt"),
        "remove_unused_fields_from_bundle_metagraph": "true",
        "prefer_tflite_model": "false",
        "num_tflite_pools": "2",
        "num_tflite_interpreters_per_pool": "1",
        "enable_signature_method_name_check": "true",
        "xla_cpu_compilation_enabled": "true",
        "xla_gpu_compilation_enabled": "false",
        "enable_profiler": "true",
        "thread_pool_factory_config_file": str(tmp_path / "thread_pool.pbtxt"),
        "mixed_precision": "bfloat16",
        "skip_initialize_tpu": "true",
        "enable_grpc_healthcheck_service": "true",
        "enable_serialization_as_tensor_content": "true",
    }
    assert set(values) | {"port", "rest_api_port"} == set(MAIN_CC_2_20)  # the helper gives the ports
    server = Server(*(f"--{k}={v}" for k, v in values.items())).wait()
    try:
        url = f"https://127.0.0.1:{server.rest_port}/v1/models/gated/labels/stable:predict"
        r = requests.post(url, json={"instances": [{"path": models["file"]}]}, verify=str(pki.ca), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [0]}
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem.encode())
        with grpc.secure_channel(server.grpc, credentials) as channel:
            out = grpc_predict(channel, models["file"]).outputs["waited"]
            assert np.frombuffer(out.tensor_content, np.int64).tolist() == [0]
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=HealthCheckRequest.SerializeToString,
                response_deserializer=HealthCheckResponse.FromString,
            )
            assert check(HealthCheckRequest(), timeout=10).status == SERVING
        ignored = [line for line in server.lines if "Ignored (no meaning in tfpredict)" in line]
        assert len(ignored) == 1
        named = re.findall(r"--([a-z_0-9]+)=", ignored[0])
        assert named == [f.name for f in TF_SERVING_FLAGS if f.status == IGNORED]
        assert "replayed 2 warm-up requests" in server.log  # 1 record x 2 iterations
    finally:
        assert server.stop() == 0


# ------------------------------------------------------------------------------------ usage errors
def test_an_unknown_flag_names_the_closest_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model_base_path=/x", "--rest_api_prot=8501"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tfpredict serve: error: unknown flag --rest_api_prot; did you mean --rest_api_port? "
        "(see tfpredict serve --help)"
    ]


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--use_alts_credentials=true", "ALTS credentials are not supported"),
        ("--platform_config_file=/etc/platform.pbtxt", "--platform_config_file is not supported"),
        ("--tensorflow_session_parallelism=2", "Either configure --tensorflow_session_parallelism"),
    ],
)
def test_values_that_cannot_be_honoured_fail_in_one_line(
    flag: str, says: str, capsys: pytest.CaptureFixture[str], models: dict[str, Any]
) -> None:
    args = ["serve", f"--model_base_path={models['base']}", "--port=0", flag]
    args += ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_version_prints_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("TensorFlow ModelServer: tfpredict ") and out[1].startswith(
        "TensorFlow Library: 2."
    )


# ------------------------------------------------------------------------ session flags, in-process
def loaded(models: dict[str, Any], *flags: str) -> Any:
    """The Predictor `tfpredict serve` would load with these flags (the CLI's own parser)."""
    args = build_parser().parse_args(["serve", f"--model_base_path={models['base']}", *flags])
    return predictor_factory(options_from(args))(models["base"] / "1")


def test_session_parallelism_sets_both_thread_pools(models: dict[str, Any]) -> None:
    config = loaded(models, "--tensorflow_session_parallelism=3").session_config
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 3)
    config = loaded(models).session_config
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (0, 0)


def test_session_config_file_is_the_base_of_every_session(models: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "session.pbtxt"
    path.write_text("inter_op_parallelism_threads: 2\nuse_per_session_threads: true\n")
    config = loaded(models, f"--tensorflow_session_config_file={path}").session_config
    assert config.inter_op_parallelism_threads == 2 and config.use_per_session_threads
    config = loaded(models, f"--tensorflow_session_config_file={path}", "--tensorflow_inter_op_parallelism=1")
    assert config.session_config.inter_op_parallelism_threads == 1  # the flag wins, as in TF Serving


def test_xla_flags_turn_on_xla_compilation() -> None:
    export = Path(__file__).resolve().parents[2] / "examples" / "model"
    import pandas as pd

    data = pd.read_csv(export.parent / "data.csv").head(4)
    for flags, clusters in (
        ([], 0),
        (["--xla_cpu_compilation_enabled"], 1),
        (["--xla_gpu_compilation_enabled"], 1),
    ):
        args = build_parser().parse_args(["serve", f"--model_base_path={export}", *flags])
        predictor = predictor_factory(options_from(args))(next(export.iterdir()))
        found = predictor.xla_clusters(data)
        assert (found > 0) == bool(clusters), (flags, found)


# ------------------------------------------------------------------- request-path flags, two servers
@pytest.fixture(scope="module")
def plain_and_on(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same model twice: with TF Serving's defaults, and with the flags under test."""
    root = tmp_path_factory.mktemp("on")
    config = config_file(root / "models.pbtxt", {"gated": models["base"]}, {"stable": 1})
    common = (f"--model_config_file={config}", "--enable_batching")
    servers = {
        "plain": Server(*common),
        "on": Server(
            *common,
            "--rest_api_enable_cors_support",
            "--enable_serialization_as_tensor_content",
            "--enable_signature_method_name_check",
            "--num_request_iterations_for_warmup=3",
            "--allow_version_labels_for_unavailable_models",
        ),
    }
    try:
        yield {k: s.wait() for k, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()


def test_cors_headers_and_preflight(plain_and_on: dict[str, Server], models: dict[str, Any]) -> None:
    on, plain = plain_and_on["on"], plain_and_on["plain"]
    r = predict(on, [models["file"]])
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "POST, GET"
    assert r.headers["Access-Control-Allow-Headers"] == "Content-Type"
    pre = requests.options(on.rest + "/v1/models/gated:predict", headers={"Origin": "https://a.example"})
    assert pre.status_code == 200 and pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in predict(plain, [models["file"]]).headers
    assert requests.options(plain.rest + "/v1/models/gated:predict").status_code == 400


def test_tensor_content_serialization(plain_and_on: dict[str, Server], models: dict[str, Any]) -> None:
    with grpc.insecure_channel(plain_and_on["on"].grpc) as channel:
        out = grpc_predict(channel, models["file"]).outputs["waited"]
    assert out.tensor_content == np.array([0], np.int64).tobytes() and not out.int64_val
    with grpc.insecure_channel(plain_and_on["plain"].grpc) as channel:
        out = grpc_predict(channel, models["file"]).outputs["waited"]
    assert list(out.int64_val) == [0] and not out.tensor_content


def test_signature_method_name_check(plain_and_on: dict[str, Server], models: dict[str, Any]) -> None:
    body = {"examples": [{"path": models["file"]}]}
    on = plain_and_on["on"].post("/v1/models/gated:classify", body)
    assert on.status_code == 400
    assert on.json()["error"] == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    plain = plain_and_on["plain"].post("/v1/models/gated:classify", body)
    assert "method_name" not in plain.json()["error"]  # without the check: the outputs are what fail


def test_warmup_iterations(plain_and_on: dict[str, Server]) -> None:
    assert "replayed 3 warm-up requests" in plain_and_on["on"].log
    assert "replayed 1 warm-up requests" in plain_and_on["plain"].log


def test_labels_for_unavailable_versions(plain_and_on: dict[str, Server], models: dict[str, Any]) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add()
    config.name, config.base_path, config.model_platform = "gated", str(models["base"]), "tensorflow"
    config.version_labels["stable"] = 1
    config.version_labels["canary"] = 2  # no version 2 yet
    answers = {}
    for name, server in plain_and_on.items():
        with grpc.insecure_channel(server.grpc) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            answers[name] = stub.HandleReloadConfigRequest(request, timeout=60).status
    assert answers["on"].error_code == 0, answers["on"]
    assert answers["plain"].error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert answers["plain"].error_message == (
        "Request to assign label to version 2 of model gated, which is not currently available for inference"
    )
    on, plain = plain_and_on["on"], plain_and_on["plain"]
    assert predict(on, [models["file"]], model="gated/labels/stable").status_code == 200
    assert (
        "Unrecognized servable version label"
        in predict(plain, [models["file"]], model="gated/labels/canary").text
    )
    assert predict(on, [models["file"]], model="gated/labels/canary").status_code in (
        404,
        503,
    )  # no version 2


# -------------------------------------------------------------------------------------- load flags
def states(server: Server, names: list[str]) -> list[str]:
    out = []
    for name in names:
        r = server.get(f"/v1/models/{name}")
        out.append(r.json()["model_version_status"][0]["state"] if r.status_code == 200 else "-")
    return out


@pytest.mark.parametrize(("threads", "loading_at_once"), [("0", 1), ("2", 2)])
def test_num_load_threads(tmp_path: Path, threads: str, loading_at_once: int) -> None:
    (a, gate_a), (b, gate_b) = gated_model(tmp_path, "a"), gated_model(tmp_path, "b")
    config = config_file(tmp_path / "models.pbtxt", {"a": a, "b": b})
    server = Server(f"--model_config_file={config}", f"--num_load_threads={threads}")
    try:
        deadline = time.monotonic() + 120
        while server.log.count(" from ") < loading_at_once:  # "Loading model x version 1 from ..."
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log[-2000:]
            time.sleep(0.1)
        time.sleep(1.0)  # time enough for a second load to begin, were it going to
        assert sorted(states(server, ["a", "b"])).count("LOADING") == loading_at_once
        gate_a.open()
        gate_b.open()
        server.wait()
        assert states(server, ["a", "b"]) == ["AVAILABLE", "AVAILABLE"]
    finally:
        gate_a.open()
        gate_b.open()
        server.stop()


def test_load_retries(tmp_path: Path) -> None:
    base = broken_model(tmp_path)
    server = Server(
        "--model_name=broken",
        f"--model_base_path={base}",
        "--max_num_load_retries=2",
        "--load_retry_interval_micros=200000",
        "--file_system_poll_wait_seconds=0.1",
    ).wait()
    try:
        deadline = time.monotonic() + 60
        while server.log.count("failed to load") < 3:
            assert time.monotonic() < deadline, server.log[-2000:]
            time.sleep(0.1)
        time.sleep(2.0)  # ten retry intervals: no fourth attempt
        assert server.log.count("failed to load") == 3
        assert "(retry in 0.2s, 2 left)" in server.log and "(retry in 0.2s, 1 left)" in server.log
    finally:
        server.stop()


def test_per_model_batching_parameters(models: dict[str, Any], tmp_path: Path) -> None:
    """The version's batching_params.pbtxt: max_batch_size 8 (a request of 9 rows is refused, as TF
    Serving refuses it), split into model calls of at most 2 rows (enable_large_batch_splitting,
    max_execution_batch_size, allowed_batch_sizes), counted in the batch-size histogram."""
    own = tmp_path / "own"
    shutil.copytree(models["base"], own)
    (own / "1" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 8 }\nenable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 2 }\nallowed_batch_sizes: [1, 2]\n"
    )
    monitoring = tmp_path / "monitoring.pbtxt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    config = config_file(tmp_path / "models.pbtxt", {"gated": own})
    args = (f"--model_config_file={config}", "--enable_batching", f"--monitoring_config_file={monitoring}")
    per_model = Server(*args, "--enable_per_model_batching_parameters")
    common = Server(*args)
    try:
        per_model.wait()
        common.wait()
        rows = [models["file"]] * 5
        r = predict(per_model, rows)
        assert r.status_code == 200 and r.json() == {"predictions": [0] * 5}
        histogram = _batch_sizes(per_model)
        assert histogram == {"count": 3, "sum": 5}, histogram  # 2 + 2 + 1 rows
        too_many = predict(per_model, [models["file"]] * 9)
        assert too_many.status_code == 400
        assert too_many.json()["error"] == "Task size 9 is larger than maximum input batch size 8"
        assert predict(common, [models["file"]] * 9).status_code == 200  # the common defaults: 1000
        assert _batch_sizes(common) == {"count": 1, "sum": 9}
    finally:
        per_model.stop()
        common.stop()


def _batch_sizes(server: Server) -> dict[str, int]:
    text = server.get("/metrics").text
    out = {}
    for what in ("count", "sum"):
        m = re.search(rf"processed_batch_size_{what}\{{[^}}]*\}} ([0-9.e+]+)", text)
        out[what] = int(float(m.group(1))) if m else 0
    return out


def test_a_model_without_batching_params_is_not_batched(models: dict[str, Any], tmp_path: Path) -> None:
    """--enable_per_model_batching_parameters: a version without the file runs unbatched (TF Serving)."""
    base = tmp_path / "nofile"
    export_gated(base / "1")
    monitoring = tmp_path / "monitoring.pbtxt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    server = Server(
        "--model_name=gated",
        f"--model_base_path={base}",
        "--enable_batching",
        "--enable_per_model_batching_parameters",
        f"--monitoring_config_file={monitoring}",
    ).wait()
    try:
        assert predict(server, [models["file"]]).status_code == 200
        assert _batch_sizes(server) == {"count": 0, "sum": 0}
    finally:
        server.stop()


def test_a_polled_config_with_a_label_it_may_not_set_is_one_log_line(
    models: dict[str, Any], tmp_path: Path
) -> None:
    config = config_file(tmp_path / "models.pbtxt", {"gated": models["base"]}, {"stable": 1})
    server = Server(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.2").wait()
    try:
        config_file(config, {"gated": models["base"]}, {"stable": 1, "canary": 2})
        deadline = time.monotonic() + 30
        while "which is not currently available for inference" not in server.log:
            assert time.monotonic() < deadline, server.log[-2000:]
            time.sleep(0.1)
        assert "Traceback" not in server.log
        assert predict(server, [models["file"]], model="gated/labels/stable").status_code == 200
    finally:
        server.stop()

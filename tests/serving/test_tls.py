"""--ssl_config_file: TLS and mutual TLS on REST (requests with a CA bundle) and gRPC (grpcio with
ssl_channel_credentials), both gRPC front ends, with certificates made at test time; clients without a
valid certificate are refused under client_verify, and the server keeps serving the others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from .certs import Pki, make_pki
from .conftest import SRC, Server

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def servers(pki: Pki, testdata: dict[str, str]):  # type: ignore[no-untyped-def]
    """TLS on the HTTP/2 front end, mutual TLS on each gRPC front end: started side by side."""
    model = ["--model_name=half", f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}"]
    started = {
        "tls": Server(*model, f"--ssl_config_file={pki.ssl_config(False)}"),
        "mtls": Server(*model, f"--ssl_config_file={pki.ssl_config(True)}"),
        "mtls_grpcio": Server(*model, f"--ssl_config_file={pki.ssl_config(True)}", "--grpc_frontend=grpcio"),
        "tls_grpcio": Server(*model, f"--ssl_config_file={pki.ssl_config(False)}", "--grpc_frontend=grpcio"),
    }
    yield started
    for s in started.values():
        s.stop()


def https(server: Server, path: str) -> str:
    return f"https://127.0.0.1:{server.rest_port}{path}"


def predict_rest(server: Server, **tls: object) -> list[float]:
    r = requests.post(
        https(server, "/v1/models/half:predict"), json={"instances": [1.0, 2.0]}, timeout=30, **tls
    )  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return r.json()["predictions"]  # type: ignore[no-any-return]


def predict_grpc(server: Server, credentials: grpc.ChannelCredentials) -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = 2
    request.inputs["x"].float_val.extend([1.0, 2.0])
    with grpc.secure_channel(server.grpc, credentials) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=20)
    return list(response.outputs["y"].float_val)


def client_credentials(
    pki: Pki, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def test_rest_over_tls_with_a_ca_bundle(servers, pki: Pki) -> None:
    server = servers["tls"].wait()
    assert predict_rest(server, verify=str(pki.ca)) == [2.5, 3.0]
    with pytest.raises(requests.exceptions.SSLError):  # the server's certificate is checked
        requests.get(https(server, "/v1/models/half"), verify=str(pki.rogue_cert), timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP on the TLS port
        requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/half", timeout=30)
    assert predict_rest(server, verify=str(pki.ca)) == [2.5, 3.0]


@pytest.mark.parametrize("which", ["tls", "tls_grpcio"])
def test_grpc_over_tls(servers, pki: Pki, which: str) -> None:
    server = servers[which].wait()
    assert predict_grpc(server, client_credentials(pki)) == [2.5, 3.0]
    with grpc.insecure_channel(server.grpc) as channel:  # plaintext HTTP/2 on the TLS port is refused
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(predict_pb2.PredictRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rest_mutual_tls(servers, pki: Pki) -> None:
    server = servers["mtls"].wait()
    good = {"verify": str(pki.ca), "cert": (str(pki.client_cert), str(pki.client_key))}
    assert predict_rest(server, **good) == [2.5, 3.0]
    for bad in (
        {"verify": str(pki.ca)},  # no client certificate
        {"verify": str(pki.ca), "cert": (str(pki.rogue_cert), str(pki.rogue_key))},  # another CA's
    ):
        with pytest.raises(requests.exceptions.ConnectionError):
            predict_rest(server, **bad)
    assert predict_rest(server, **good) == [2.5, 3.0]  # refusing those did not hurt the server


@pytest.mark.parametrize("which", ["mtls", "mtls_grpcio"])
def test_grpc_mutual_tls(servers, pki: Pki, which: str) -> None:
    server = servers[which].wait()
    good = client_credentials(pki, pki.client_cert, pki.client_key)
    assert predict_grpc(server, good) == [2.5, 3.0]
    for bad in (client_credentials(pki), client_credentials(pki, pki.rogue_cert, pki.rogue_key)):
        with pytest.raises(grpc.RpcError) as err:
            predict_grpc(server, bad)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert predict_grpc(server, good) == [2.5, 3.0]


def serve_fails(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "tfpredict", "serve", "--port=0", "--rest_api_port=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_bad_ssl_configs_fail_with_one_line(pki: Pki, tmp_path: Path, testdata: dict[str, str]) -> None:
    model = f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}"
    other = make_pki(tmp_path / "other")
    mismatched = pki.ssl_config(False, "mismatch.pbtxt")
    mismatched.write_text(mismatched.read_text().replace(_quoted(pki.server.key), _quoted(other.server.key)))
    cases = {
        str(tmp_path / "missing.pbtxt"): "Could not open SSL config file",
        str(_write(tmp_path / "garbage.pbtxt", "server_key: 3 4")): "Error parsing text-format",
        str(_write(tmp_path / "nocert.pbtxt", 'server_key: "x"')): "needs server_key and server_cert",
        str(
            _write(tmp_path / "noca.pbtxt", f"{_certs(pki)}client_verify: true")
        ): "client_verify needs custom_ca",
        str(mismatched): "are not a PEM certificate and its key",
    }
    for path, message in cases.items():
        out = serve_fails(model, f"--ssl_config_file={path}")
        assert out.returncode != 0
        assert message in out.stderr and path in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def _quoted(pem: str) -> str:
    return pem.replace("\n", "\\n")


def _certs(pki: Pki) -> str:
    return f'server_key: "{_quoted(pki.server.key)}"\nserver_cert: "{_quoted(pki.server.cert)}"\n'


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

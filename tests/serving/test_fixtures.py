"""Every fixture Estimator export answers REST :predict, :classify / :regress (where it has those
signatures) and gRPC Predict with the outputs Estimator.predict recorded in expected.json."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfpredict.serving import proto_codec

from ..conftest import FIXTURES, Fixture, assert_matches
from .conftest import Server
from .test_tf_serving_compat import config_text

pytestmark = pytest.mark.skipif(not FIXTURES, reason="no fixture exports")


class Case:
    """A fixture with its rows as JSON values and its signatures, read once."""

    def __init__(self, name: str) -> None:
        from tfpredict import Predictor

        self.fx = Fixture(name)
        p = Predictor.load(self.fx.export)
        self.signatures = {
            k: (s.method_name, dict(s.inputs), list(s.outputs)) for k, s in p.signatures.items()
        }
        self.predict_sig = "predict" if "predict" in p.signatures else "serving_default"
        self.specs = p.inputs_for(self.predict_sig)
        self.parsing = p.path_for(self.predict_sig) != "tensors"
        frame = self.fx.read_csv(p)
        p.close()
        self.rows = [self._row(rec) for rec in frame.to_dict("records")]

    def _row(self, rec: dict[str, Any]) -> dict[str, Any]:
        row = {}
        for name, spec in self.specs.items():
            v = rec.get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            if isinstance(v, str) and v.startswith("["):
                v = json.loads(v)
            elif isinstance(v, np.generic):
                v = v.item()
            if spec.dtype.startswith("float"):
                v = [float(x) for x in v] if isinstance(v, list) else float(v)
            elif spec.dtype.startswith("int"):
                v = [int(x) for x in v] if isinstance(v, list) else int(v)
            else:
                v = [str(x) for x in v] if isinstance(v, list) else str(v)
            row[name] = v
        return row

    def examples(self) -> list[bytes]:
        out = []
        for row in self.rows:
            ex = example_pb2.Example()
            for name, v in row.items():
                values = v if isinstance(v, list) else [v]
                f = ex.features.feature[name]
                dtype = self.specs[name].dtype
                if dtype.startswith("float"):
                    f.float_list.value.extend(values)
                elif dtype.startswith("int"):
                    f.int64_list.value.extend(values)
                else:
                    f.bytes_list.value.extend(x.encode() for x in values)
            out.append(ex.SerializeToString())
        return out


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {name: Case(name) for name in FIXTURES}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    cfg = tmp_path_factory.mktemp("fixtures") / "models.config"
    cfg.write_text(config_text({name: str(Fixture(name).export) for name in FIXTURES}))
    s = Server(f"--model_config_file={cfg}", "--file_system_poll_wait_seconds=0")
    yield s.wait()
    s.stop()


def columns(predictions: list[Any], outputs: list[str]) -> dict[str, list[Any]]:
    if predictions and isinstance(predictions[0], dict):
        return {k: [row[k] for row in predictions] for k in predictions[0]}
    return {outputs[0]: predictions}


@pytest.mark.parametrize("name", FIXTURES)
def test_rest_predict(server: Server, cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    outputs = case.signatures[case.predict_sig][2]
    if case.parsing:
        # TF Serving's way: serialized tf.Examples as b64 strings
        instances: list[Any] = [{"b64": base64.b64encode(e).decode()} for e in case.examples()]
        r = server.post(
            f"/v1/models/{name}:predict", {"signature_name": case.predict_sig, "instances": instances}
        )
        assert r.status_code == 200, r.text
        assert_matches(
            columns(r.json()["predictions"], outputs), case.fx.expected, f"{name} REST b64 examples"
        )
    # feature rows as JSON objects: 50 rows take the fast path (no tf.Example built), 3 rows are cheaper
    # as tf.Examples built from the feature specs; both must give the recorded answers
    r = server.post(
        f"/v1/models/{name}:predict", {"signature_name": case.predict_sig, "instances": case.rows}
    )
    assert r.status_code == 200, r.text
    assert_matches(columns(r.json()["predictions"], outputs), case.fx.expected, f"{name} REST rows")
    r = server.post(
        f"/v1/models/{name}:predict", {"signature_name": case.predict_sig, "instances": case.rows[:3]}
    )
    assert r.status_code == 200, r.text
    head = {k: v[:3] for k, v in case.fx.expected.items()}
    assert_matches(columns(r.json()["predictions"], outputs), head, f"{name} REST 3 rows")


@pytest.mark.parametrize("name", FIXTURES)
def test_rest_classify_regress(server: Server, cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    expected = case.fx.expected
    classify = [k for k, s in case.signatures.items() if s[0] == "tensorflow/serving/classify"]
    regress = [k for k, s in case.signatures.items() if s[0] == "tensorflow/serving/regress"]
    if not classify and not regress:
        pytest.skip(f"{name} has no classify or regress signature")
    for sig in classify:
        r = server.post(f"/v1/models/{name}:classify", {"signature_name": sig, "examples": case.rows})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == len(case.rows)
        scores = [[score for _label, score in row] for row in results]
        assert_matches(
            {"probabilities": scores}, {"probabilities": expected["probabilities"]}, f"{name} {sig}"
        )
        if "all_classes" in expected:
            labels = [[label for label, _score in row] for row in results]
            assert labels == expected["all_classes"]
    for sig in regress:
        r = server.post(f"/v1/models/{name}:regress", {"signature_name": sig, "examples": case.rows})
        want_key = next(k for k in ("predictions", "logistic", "value") if k in expected)
        want = np.asarray(expected[want_key], dtype=np.float64)
        if want.ndim == 2 and want.shape[1] > 1:  # label_dimension > 1: TF Serving's Regress refuses it too
            assert r.status_code == 400
            assert (
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1]"
                in r.json()["error"]
            )
            continue
        assert r.status_code == 200, r.text
        want = want.reshape(-1)
        np.testing.assert_allclose(np.asarray(r.json()["results"]), want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", FIXTURES)
def test_grpc_predict(server: Server, cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = case.predict_sig
    inputs = case.signatures[case.predict_sig][1]
    if case.parsing:
        (key,) = inputs
        arr = np.empty(len(case.rows), dtype=object)
        arr[:] = case.examples()
        proto_codec.from_ndarray(arr, request.inputs[key])
    else:
        for key, info in inputs.items():
            values = [row[key] for row in case.rows]
            dtype = {"float32": np.float32, "int64": np.int64, "float64": np.float64, "int32": np.int32}[
                info.dtype
            ]
            proto_codec.from_ndarray(np.asarray(values, dtype=dtype), request.inputs[key])
    with grpc.insecure_channel(server.grpc) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    got = {k: proto_codec.to_ndarray(v) for k, v in result.outputs.items()}
    assert_matches(got, case.fx.expected, f"{name} gRPC Predict")
    assert result.model_spec.version.value > 0

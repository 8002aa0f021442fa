"""Shared fixtures: the committed Estimator exports under tests/fixtures/exports/NAME/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TESTS = Path(__file__).parent
EXPORTS = TESTS / "fixtures" / "exports"

#: Tests marked `slow` (deselect them with `pytest -m "not slow"`, the fast loop), by path or path::name
#: prefix: they run doctor's timed measurements, start Ray clusters, model-server or CLI processes (each
#: pays TensorFlow's start-up), drive a headless browser, or run the corpus of real exports. Kept here so
#: that the test modules themselves need no marker lines.
SLOW_MODULES = {
    "test_corpus.py": "23 real exports against TensorFlow references (~10 min)",
    "test_cli_predict.py::test_signal_mid_run": "3,000,000-row runs of the CLI, interrupted",
    "test_cli_predict.py::test_bad_rows": "the CLI as a process",
    "test_columns.py::test_cli_": "the CLI as a process",
    "test_columns.py::test_a_fraction_for_an_int_feature": "the CLI as a process",
    "test_columns.py::test_keras_dense_input_from_jsonl": "the CLI as a process",
    "test_export_kinds.py::test_csv_line_receiver_predicts_from_a_csv_file": "the CLI as a process",
    "test_legacy_ops.py::test_inspect_names_the_rewrites": "the CLI as a process",
    "test_predictor.py::test_inspect_cli": "the CLI as a process",
    "test_tf2_exports.py::test_distributed_keras_model_predicts": "builds its model in a process",
    "doctor/test_doctor.py": "doctor runs with their time budgets, the HTML report in Chromium",
    "doctor/test_doctor_columns.py": "doctor runs",
    "doctor/test_fixtures.py": "doctor runs on every fixture export",
    "engines/": "Ray clusters",
    "serving/test_batching_process.py": "model-server processes",
    "serving/test_behaviour.py": "a model-server process",
    "serving/test_fixtures.py": "a model-server process",
    "serving/test_h2spec.py": "a model server against h2spec",
    "serving/test_health.py": "model-server processes while models load",
    "serving/test_flags.py": "model-server processes with TF Serving's flags",
    "serving/test_hostile_http1.py": "a loopback server waiting out its timeouts",
    "serving/test_hostile_http2.py": "a loopback server under floods",
    "serving/test_hostile_clients.py": "a model-server process under 16 attacks",
    "serving/test_recovery.py": "model-server processes with a killed child and unreadable paths",
    "serving/test_hot_reload.py": "a model-server process",
    "serving/test_tf_serving_compat.py": "model-server processes",
    "serving/test_tls.py": "model-server processes with TLS",
    "serving/test_request_log.py": "model-server processes",
    "serving/test_response_cache.py": "model-server processes",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        where = Path(item.path).relative_to(TESTS).as_posix() + "::" + item.name
        if any(where.startswith(prefix) for prefix in SLOW_MODULES):
            item.add_marker(pytest.mark.slow)


FIXTURES = (
    sorted(p.name for p in EXPORTS.iterdir() if (p / "expected.json").is_file()) if EXPORTS.is_dir() else []
)


class Fixture:
    def __init__(self, name: str) -> None:
        self.name = name
        self.root = EXPORTS / name
        self.export = self.root / "export"
        self.csv = self.root / "data.csv"
        meta = json.loads((self.root / "expected.json").read_text())
        self.estimator = meta.get("estimator")
        self.receiver = meta.get("receiver")
        self.expected: dict[str, list] = meta["predictions"]

    def read_csv(self, predictor):  # type: ignore[no-untyped-def]
        """pandas.read_csv, told which columns the model reads as strings (so "02134" stays "02134")."""
        import pandas as pd

        strings = {k: str for k, f in predictor.inputs.items() if f.dtype == "string"}
        return pd.read_csv(self.csv, dtype=strings)


def assert_matches(got: dict, expected: dict[str, list], context: str = "") -> None:
    """Every expected key is present and equal: numbers to 1e-5, strings exactly."""
    assert set(expected) <= set(got), f"{context}: missing outputs {set(expected) - set(got)}"
    for key, want in expected.items():
        have = np.asarray(got[key])
        want_arr = np.asarray(want)
        if have.dtype.kind in "OSU" or want_arr.dtype.kind in "OSU":
            have_s = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(
                have
            )
            assert have_s.reshape(want_arr.shape).tolist() == want_arr.tolist(), (
                f"{context}: output {key!r} differs"
            )
        else:
            np.testing.assert_allclose(
                have.reshape(want_arr.shape).astype(np.float64),
                want_arr,
                rtol=1e-5,
                atol=1e-5,
                err_msg=f"{context}: output {key!r}",
            )


@pytest.fixture(params=FIXTURES)
def fixture(request: pytest.FixtureRequest) -> Fixture:
    return Fixture(request.param)


def load_fixture(name: str) -> Fixture:
    return Fixture(name)

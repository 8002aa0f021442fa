"""`tfpredict doctor` reads the input columns as `tfpredict predict` does: a missing column fails at once
(naming it and the columns found), --allow-missing measures anyway, --assemble builds one input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfpredict import InputError, doctor

from ..conftest import load_fixture

DNN = load_fixture("dnn_binary")


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfpredict", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.fixture(scope="module")
def no_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doctor_columns") / "no_city.csv"
    pd.read_csv(DNN.csv, dtype={"zip": str}).drop(columns=["city"]).to_csv(path, index=False)
    return path


def test_doctor_missing_column_is_one_line_error(no_city: Path) -> None:
    r = _doctor(str(DNN.export), str(no_city), "--seconds", "20", "-q")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{no_city}: missing column 'city' needed by the model" in lines[0]
    assert "columns found: id, age, hours, color, zip" in lines[0]


def test_doctor_allow_missing_measures(no_city: Path) -> None:
    diagnosis = doctor(DNN.export, no_city, seconds=8, allow_missing=["city"])
    assert diagnosis.measurements.stages["model"].rows > 0
    with pytest.raises(InputError, match="missing column 'city'"):
        doctor(DNN.export, no_city, seconds=8)


def test_doctor_assembles_one_input(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input(shape=(4,), name="features"), keras.layers.Dense(1)])
    export = tmp_path / "model" / "1"
    model.export(str(export), verbose=False)
    values = np.random.default_rng(3).normal(size=(200, 4)).astype(np.float32)
    data = tmp_path / "wide.csv"
    pd.DataFrame(values, columns=["a", "b", "c", "d"]).to_csv(data, index=False)
    r = _doctor(str(export), str(data), "--seconds", "20", "-q", "--json", "--assemble", "features=a:d")
    assert r.returncode == 0, r.stderr
    assert '"bottleneck"' in r.stdout

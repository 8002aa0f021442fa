"""The Ray engine reads the input columns the way the local engine does: a missing column is an error (in any
file, before the job starts) unless --allow-missing names it; --assemble builds one input from columns."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from tfpredict import predict_files as predict_files_local  # noqa: E402
from tfpredict.cli.main import main  # noqa: E402
from tfpredict.engines import ray as engine  # noqa: E402
from tfpredict.errors import InputError  # noqa: E402

from ..conftest import load_fixture  # noqa: E402

DNN = load_fixture("dnn_binary")


@pytest.fixture(scope="module", autouse=True)
def ray_session():  # type: ignore[no-untyped-def]
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=500 << 20,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield
    ray.shutdown()


def _no_city(tmp_path: Path) -> tuple[Path, Path]:
    frame = pd.read_csv(DNN.csv, dtype={"zip": str})
    good, bad = tmp_path / "good.csv", tmp_path / "no_city.csv"
    frame.to_csv(good, index=False)
    frame.drop(columns=["city"]).to_csv(bad, index=False)
    return good, bad


def test_ray_missing_column_fails_before_the_job(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    good, bad = _no_city(tmp_path)
    monkeypatch.setattr(engine, "PRECHECK_FILES", 1)  # the second file is checked by its header alone
    out = tmp_path / "out.parquet"
    code = main(["predict", str(DNN.export), str(good), str(bad), "-o", str(out), "--engine", "ray", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert f"{bad}: missing column 'city' needed by the model" in err[-1]
    assert "--allow-missing city" in err[-1]
    assert not out.exists()


def test_ray_allow_missing_gives_the_local_engines_rows(tmp_path: Path) -> None:
    _, bad = _no_city(tmp_path)
    ray_out, local_out = tmp_path / "ray.parquet", tmp_path / "local.parquet"
    engine.predict_files(DNN.export, bad, ray_out, keep=["id"], allow_missing=["city"])
    predict_files_local(DNN.export, bad, local_out, keep=["id"], allow_missing=["city"])
    got = pq.read_table(ray_out).to_pandas().sort_values("id")
    want = pq.read_table(local_out).to_pandas().sort_values("id")
    np.testing.assert_allclose(np.stack(got["probabilities"]), np.stack(want["probabilities"]), rtol=1e-6)


def test_ray_assembles_one_input_from_columns(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input(shape=(8,), name="features"), keras.layers.Dense(2)])
    export = tmp_path / "model" / "1"
    model.export(str(export), verbose=False)
    values = np.random.default_rng(2).normal(size=(20, 8)).astype(np.float32)
    frame = pd.DataFrame(values, columns=[f"f{i}" for i in range(8)])
    frame.insert(0, "id", range(20))
    data = tmp_path / "wide.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "out.jsonl"
    code = main(
        ["predict", str(export), str(data), "-o", str(out), "--engine", "ray", "-q", "--keep", "id",
         "--assemble", "features=f0:f7"]
    )  # fmt: skip
    assert code == 0
    rows = sorted(
        (json.loads(line) for f in sorted(out.iterdir()) for line in f.read_text().splitlines()),
        key=lambda r: int(r["id"]),  # CSV ids are kept as text
    )
    got = np.array([r["output_0"] for r in rows])
    np.testing.assert_allclose(got, model.predict(values, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"missing column 'f3' needed by the model"):
        frame.drop(columns=["f3"]).to_csv(data, index=False)
        engine.predict_files(
            export, data, tmp_path / "o2.parquet", assemble={"features": "f0,f1,f2,f3,f4,f5,f6,f7"}
        )

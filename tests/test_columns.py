"""Which input columns feed the model: missing columns are errors (unless allowed), integral floats feed int
features, nested-list cells feed multi-dimensional inputs, and one input can be assembled from columns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfpredict import InputError, Predictor, predict_files

from .conftest import load_fixture

DNN = load_fixture("dnn_binary")  # age (required), hours (default 40), city / color / zip (var-len)


def _tfpredict(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfpredict", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def dnn() -> Predictor:
    predictor = Predictor.load(DNN.export)
    yield predictor
    predictor.close()


@pytest.fixture(scope="module")
def frame(dnn: Predictor) -> pd.DataFrame:
    return DNN.read_csv(dnn)


# ------------------------------------------------------------------------------------------ missing columns


def _containers(frame: pd.DataFrame) -> dict[str, object]:
    rows = frame.astype(object).where(frame.notna(), None)
    return {
        "DataFrame": frame,
        "Arrow": pa.Table.from_pandas(frame, preserve_index=False),
        "dict": {k: rows[k].tolist() for k in rows.columns},
        "rows": rows.to_dict("records"),
        "one row": rows.iloc[0].to_dict(),
    }


@pytest.mark.parametrize("kind", ["DataFrame", "Arrow", "dict", "rows", "one row"])
def test_library_missing_varlen_column_is_an_error(dnn: Predictor, frame: pd.DataFrame, kind: str) -> None:
    data = _containers(frame.drop(columns=["city"]))[kind]
    with pytest.raises(InputError) as info:
        dnn.predict(data)
    message = info.value.message
    assert message.startswith("Missing column 'city' needed by the model (city: string[?] varlen)")
    assert "columns found: id, age, hours, color, zip" in message
    assert "allow_missing=['city']" in message
    with pytest.raises(InputError, match="Missing column 'city'"):
        dnn.convert(data)


def test_library_missing_column_with_a_default_is_an_error(dnn: Predictor, frame: pd.DataFrame) -> None:
    with pytest.raises(InputError, match=r"Missing columns 'city', 'hours' needed by the model"):
        dnn.predict(frame.drop(columns=["hours", "city"]))


def test_allow_missing_restores_the_old_behaviour(dnn: Predictor, frame: pd.DataFrame) -> None:
    dropped = frame.drop(columns=["city"])
    as_if_empty = frame.assign(city=None)  # what a missing column used to mean: missing in every row
    want = dnn.predict(as_if_empty)["probabilities"]
    got = dnn.predict(dropped, allow_missing=["city"])["probabilities"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(got, dnn.predict(frame)["probabilities"])  # the column mattered
    np.testing.assert_allclose(dnn.predict(dropped, allow_missing=True)["probabilities"], want, rtol=1e-6)
    with pytest.raises(InputError, match="Missing column 'age'"):  # required stays required
        dnn.predict(frame.drop(columns=["age"]), allow_missing=["age"])
    with Predictor.load(DNN.export, allow_missing=["city"]) as lenient:
        np.testing.assert_allclose(lenient.predict(dropped)["probabilities"], want, rtol=1e-6)
        with pytest.raises(InputError, match="Missing column 'city'"):  # the per-call value wins
            lenient.predict(dropped, allow_missing=())


def test_cli_missing_column_fails_and_allow_missing_restores(tmp_path: Path, frame: pd.DataFrame) -> None:
    data = tmp_path / "no_city.csv"
    frame.drop(columns=["city"]).to_csv(data, index=False)
    out = tmp_path / "out.csv"
    bad = _tfpredict("predict", str(DNN.export), str(data), "-o", str(out), "-q")
    assert bad.returncode == 2, bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert f"{data}: missing column 'city' needed by the model" in last
    assert "columns found: id, age, hours, color, zip" in last and "--allow-missing city" in last
    assert not out.exists()

    ok = _tfpredict(
        "predict", str(DNN.export), str(data), "-o", str(out), "-q", "--allow-missing", "city,nothing"
    )
    assert ok.returncode == 0, ok.stderr
    with Predictor.load(DNN.export) as p:
        want = p.predict(frame.assign(city=None))["probabilities"]
    got = np.array([json.loads(v) for v in pd.read_csv(out)["probabilities"]])
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_predict_files_missing_column_in_parquet_and_jsonl(
    tmp_path: Path, frame: pd.DataFrame, fmt: str
) -> None:
    data = tmp_path / f"in.{fmt}"
    rows = frame.drop(columns=["zip"])
    if fmt == "parquet":
        rows.to_parquet(data)
    else:
        rows.to_json(data, orient="records", lines=True)
    with pytest.raises(InputError, match=rf"in.{fmt}: missing column 'zip' needed by the model"):
        predict_files(DNN.export, data, tmp_path / "out.parquet")
    result = predict_files(DNN.export, data, tmp_path / "out.parquet", allow_missing=["zip"])
    assert result.rows == len(frame)


def test_per_row_missing_values_stay_allowed(dnn: Predictor, frame: pd.DataFrame) -> None:
    assert frame["city"].isna().any() and frame["hours"].isna().any()  # gaps in present columns
    got = dnn.predict(frame)["probabilities"]
    assert got.shape == (len(frame), 2)


# ------------------------------------------------------------------------------------------ integral floats


@pytest.fixture(scope="module")
def int_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw signature with an int64 input `trip_seconds` (as TFX's taxi export declares it)."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="trip_seconds")])
        def serve(self, trip_seconds: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"minutes": tf.cast(trip_seconds, tf.float64) / 60.0, "echo": trip_seconds + 0}

    path = tmp_path_factory.mktemp("int_model") / "1"
    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


BIG = 2**53 + 1  # an id a float cannot hold: must come through exactly


def test_integral_floats_feed_int_features_in_the_library(int_model: Path) -> None:
    with Predictor.load(int_model) as p:
        got = p.predict(pd.DataFrame({"trip_seconds": [180.0, 60.0, 0.0]}))
        assert got["echo"].tolist() == [180, 60, 0]
        assert p.predict({"trip_seconds": 180.0})["echo"].tolist() == [180]  # a Python float
        assert p.predict([{"trip_seconds": 1.0}, {"trip_seconds": 2.0}])["echo"].tolist() == [1, 2]
        with pytest.raises(InputError, match=r"Row 1: feature 'trip_seconds' expects int64, found 180.5"):
            p.predict(pd.DataFrame({"trip_seconds": [1.0, 180.5]}))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_integral_floats_feed_int_features_from_files(int_model: Path, tmp_path: Path, fmt: str) -> None:
    values = [180, 60, 7]
    data = tmp_path / f"taxi.{fmt}"
    if fmt == "csv":  # the integral float first appears after the first block: the column is read again
        lines = ["trip_seconds"] + [str(v) for v in values] * 3000 + ["180.0", "120."]
        data.write_text("\n".join(lines) + "\n")
        want = values * 3000 + [180, 120]
    elif fmt == "jsonl":
        data.write_text("".join(json.dumps({"trip_seconds": float(v)}) + "\n" for v in values))
        want = values
    else:
        pq.write_table(pa.table({"trip_seconds": pa.array([float(v) for v in values])}), data)
        want = values
    out = tmp_path / "out.parquet"
    result = predict_files(int_model, data, out, batch_size=1000)
    assert result.rows == len(want)
    assert pq.read_table(out).column("echo").to_pylist() == want


def test_big_ints_in_csv_stay_exact_after_an_integral_float(int_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "big.csv"
    data.write_text(f"trip_seconds\n180.0\n{BIG}\n")
    out = tmp_path / "out.parquet"
    predict_files(int_model, data, out)
    assert pq.read_table(out).column("echo").to_pylist() == [180, BIG]


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        ("csv", "line 4, column 'trip_seconds'"),
        ("jsonl", "line 3, column 'trip_seconds'"),
        ("parquet", "row 3, column 'trip_seconds'"),
    ],
)
def test_a_fraction_for_an_int_feature_names_file_line_and_column(
    int_model: Path, tmp_path: Path, fmt: str, where: str
) -> None:
    data = tmp_path / f"taxi.{fmt}"
    values = [180.0, 60.0, 180.5]
    if fmt == "csv":
        data.write_text("trip_seconds\n180\n60.0\n180.5\n")
    elif fmt == "jsonl":
        data.write_text("".join(json.dumps({"trip_seconds": v}) + "\n" for v in values))
    else:
        pq.write_table(pa.table({"trip_seconds": values}), data)
    r = _tfpredict("predict", str(int_model), str(data), "-o", str(tmp_path / "out.csv"), "-q")
    assert r.returncode == 2
    found = "'180.5'" if fmt == "csv" else "180.5"  # CSV cells are text, the others numbers
    assert r.stderr.strip().splitlines()[-1] == (
        f"tfpredict: error: {data}, {where}: expected an integer, found {found}"
    )


# ------------------------------------------------------------------------------------------ tensor inputs


@pytest.fixture(scope="module")
def matrix_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw signature taking one float32[3,3] matrix per row (x) and returning its trace and row sums."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"trace": tf.linalg.trace(x), "row_sums": tf.reduce_sum(x, axis=2)}

    path = tmp_path_factory.mktemp("matrix_model") / "1"
    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


MATRICES = [[[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[0.5, 0, 0], [0, 1.5, 0], [0, 0, 2.5]]]


def test_nested_lists_feed_a_matrix_input(matrix_model: Path) -> None:
    with Predictor.load(matrix_model) as p:
        assert p.inputs["x"].shape == (3, 3)
        got = p.predict({"x": MATRICES})
        np.testing.assert_allclose(got["trace"], [15.0, 4.5])
        np.testing.assert_allclose(got["row_sums"][0], [6, 15, 24])
        np.testing.assert_allclose(p.predict(pd.DataFrame({"x": MATRICES}))["trace"], [15.0, 4.5])
        flat = [sum(m, []) for m in MATRICES]  # nine values per row reshape too
        np.testing.assert_allclose(p.predict({"x": flat})["trace"], [15.0, 4.5])
        with pytest.raises(InputError, match=r"Row 1: feature 'x' expects shape \[3, 3\], found 2 value"):
            p.predict({"x": [MATRICES[0], [[1, 2, 3], [4, 5]]]})


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_nested_list_cells_from_files(matrix_model: Path, tmp_path: Path, fmt: str) -> None:
    data = tmp_path / f"m.{fmt}"
    if fmt == "jsonl":
        data.write_text("".join(json.dumps({"id": i, "x": m}) + "\n" for i, m in enumerate(MATRICES)))
    elif fmt == "parquet":
        pq.write_table(pa.table({"id": [0, 1], "x": MATRICES}), data)
    else:
        data.write_text("id,x\n" + "".join(f'{i},"{json.dumps(m)}"\n' for i, m in enumerate(MATRICES)))
    out = tmp_path / "out.parquet"
    predict_files(matrix_model, data, out, keep=["id"])
    np.testing.assert_allclose(pq.read_table(out).column("trace").to_pylist(), [15.0, 4.5])


def test_wrong_shape_in_a_file_names_line_and_column(matrix_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "m.jsonl"
    data.write_text(json.dumps({"x": MATRICES[0]}) + "\n" + json.dumps({"x": [[1, 2], [3, 4]]}) + "\n")
    with pytest.raises(InputError, match=r"m.jsonl, line 2: feature 'x' expects shape \[3, 3\], found 2"):
        predict_files(matrix_model, data, tmp_path / "out.parquet")


def test_keras_dense_input_from_jsonl(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input(shape=(11,), name="dense_input"), keras.layers.Dense(2)])
    export = tmp_path / "keras" / "1"
    model.export(str(export), verbose=False)
    rows = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"dense_input": r.tolist()}) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    r = _tfpredict("predict", str(export), str(data), "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line)["output_0"] for line in out.read_text().splitlines()])
    np.testing.assert_allclose(got, model.predict(rows, verbose=0), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ assembling


@pytest.fixture(scope="module")
def features_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A Keras model with one `features: float32[64]` input."""
    import keras

    model = keras.Sequential([keras.Input(shape=(64,), name="features"), keras.layers.Dense(3)])
    export = tmp_path_factory.mktemp("features_model") / "1"
    model.export(str(export), verbose=False)
    return export, model


def _wide(n: int = 6) -> pd.DataFrame:
    values = np.random.default_rng(1).normal(size=(n, 64)).astype(np.float32)
    frame = pd.DataFrame(values, columns=[f"f{i}" for i in range(64)])
    frame.insert(0, "id", range(n))
    return frame


def test_library_assembles_one_input_from_columns(features_model: tuple[Path, object]) -> None:
    export, model = features_model
    frame = _wide()
    want = model.predict(frame.iloc[:, 1:].to_numpy(), verbose=0)  # type: ignore[attr-defined]
    names = [f"f{i}" for i in range(64)]
    with Predictor.load(export) as p:
        for spec in (names, "f0:f63", ",".join(names)):
            np.testing.assert_allclose(
                p.predict(frame, assemble={"features": spec})["output_0"], want, rtol=1e-5
            )
        with pytest.raises(InputError, match=r"Missing column 'f7'.*source column of input 'features'"):
            p.predict(frame.drop(columns=["f7"]), assemble={"features": names})
        with pytest.raises(InputError, match=r"takes 64 values per row, but 3 columns were given"):
            p.predict(frame, assemble={"features": ["f0", "f1", "f2"]})
        gap = frame.astype({"f5": object})
        gap.loc[2, "f5"] = None
        with pytest.raises(InputError, match=r"Row 2: column 'f5' \(assembled into 'features'\) is missing"):
            p.predict(gap, assemble={"features": "f0:f63"})
    with Predictor.load(export, assemble={"features": "f0:f63"}) as p:
        np.testing.assert_allclose(p.predict(frame)["output_0"], want, rtol=1e-5)
    with pytest.raises(InputError, match="the model has no input 'nope'"):
        Predictor.load(export, assemble={"nope": names})


def test_cli_assemble_range_and_missing_source(features_model: tuple[Path, object], tmp_path: Path) -> None:
    export, model = features_model
    frame = _wide()
    data = tmp_path / "wide.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "out.jsonl"
    r = _tfpredict(
        "predict",
        str(export),
        str(data),
        "-o",
        str(out),
        "-q",
        "--assemble",
        "features=f0:f63",
        "--keep",
        "id",
    )
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line)["output_0"] for line in out.read_text().splitlines()])
    want = model.predict(frame.iloc[:, 1:].to_numpy(), verbose=0)  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    partial = tmp_path / "partial.csv"
    frame.drop(columns=["f9"]).to_csv(partial, index=False)
    names = ",".join(f"f{i}" for i in range(64))
    r = _tfpredict(
        "predict", str(export), str(partial), "-o", str(out), "-q", "--assemble", f"features={names}"
    )
    assert r.returncode == 2
    assert "missing column 'f9' needed by the model (f9: a source column of input 'features')" in r.stderr
    r = _tfpredict("predict", str(export), str(data), "-o", str(out), "-q", "--assemble", "features")
    assert r.returncode == 2 and "expected INPUT=FIRST:LAST" in r.stderr


def test_jsonl_key_absent_from_the_first_lines_is_not_a_missing_column(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    rows = [{"id": 0, "age": 30.0, "color": "red"}, {"id": 1, "age": 40.0, "hours": 20.0, "city": "paris"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))  # no zip anywhere; hours not in line 1
    with pytest.raises(InputError, match=r"rows.jsonl: missing column 'zip'"):
        predict_files(DNN.export, data, tmp_path / "out.parquet", batch_size=1)
    result = predict_files(DNN.export, data, tmp_path / "out.parquet", batch_size=1, allow_missing=["zip"])
    assert result.rows == 2


def test_json_list_text_in_a_large_string_column() -> None:
    fixture = load_fixture("dnn_multiclass")  # point: float32[2], read from CSV text like "[-0.76, -1.34]"
    with Predictor.load(fixture.export) as p:
        frame = pd.read_csv(fixture.csv, dtype={"habitat": str})
        table = pa.Table.from_pandas(frame, preserve_index=False)
        large = table.set_column(
            table.schema.get_field_index("point"), "point", table.column("point").cast(pa.large_string())
        )
        np.testing.assert_allclose(p.predict(large)["probabilities"], p.predict(table)["probabilities"])

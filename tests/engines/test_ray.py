"""The Ray engine on a local 2-CPU Ray cluster: the same rows as the local engine, bad input, the helper."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from tfpredict import predict_files as predict_files_local  # noqa: E402
from tfpredict.cli.main import main  # noqa: E402
from tfpredict.engines import ray as engine  # noqa: E402
from tfpredict.errors import InputError  # noqa: E402
from tfpredict.predictor import Predictor  # noqa: E402

from ..conftest import EXPORTS, assert_matches, load_fixture  # noqa: E402
from .conftest import FORMATS, assert_same_rows, read_rows, split_inputs  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_session():  # type: ignore[no-untyped-def]
    """One small local cluster for the module; the engine uses a session that is already initialised."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=500 << 20,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield
    ray.shutdown()


def _schema(name: str) -> dict:
    with Predictor.load(EXPORTS / name / "export") as p:
        return p.inputs


# (fixture, output format): text with leading zeros and missing values / multi-valued features / raw tensors.
CASES = [("dnn_binary", "parquet"), ("dnn_multiclass", "csv"), ("custom_multihead_raw", "jsonl")]


@pytest.mark.parametrize(("name", "out_format"), CASES)
def test_every_format_gives_the_local_engines_rows(name: str, out_format: str, tmp_path: Path) -> None:
    if not (EXPORTS / name / "expected.json").is_file():
        pytest.skip(f"fixture {name} not generated")
    fx = load_fixture(name)
    files = split_inputs(fx.csv, _schema(name), tmp_path / "in", parts=2, formats=FORMATS)
    ray_out = tmp_path / f"ray.{out_format}"
    local_out = tmp_path / f"local.{out_format}"

    result = engine.predict_files(fx.export, files, ray_out, keep=["id"], batch_size=16)
    predict_files_local(fx.export, files, local_out, keep=["id"], batch_size=16)

    strings = {"classes", "all_classes"}
    got, want = read_rows(ray_out, strings), read_rows(local_out, strings)
    assert result.rows == len(want) == len(FORMATS) * 50
    assert_same_rows(got, want, ordered=False, context=name)
    # And against the Estimator's own predictions for one copy of each row.
    first = {}
    for row in got:
        first.setdefault(int(row["id"]), row)
    by_id = [first[i] for i in sorted(first)]
    expected = {k: v for k, v in fx.expected.items() if k in by_id[0]}
    assert_matches({k: [r[k] for r in by_id] for k in expected}, expected, name)


def test_one_format_keeps_input_order(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    files = split_inputs(fx.csv, _schema("dnn_binary"), tmp_path / "in", parts=3, formats=("csv",))
    out = tmp_path / "ray.parquet"
    engine.predict_files(fx.export, files, out, keep=["id"], batch_size=8, workers=2)
    local = tmp_path / "local.parquet"
    predict_files_local(fx.export, files, local, keep=["id"], batch_size=8)
    got, want = read_rows(out), read_rows(local)
    assert [r["id"] for r in got] == [r["id"] for r in want] == [str(i) for i in range(50)]
    assert_same_rows(got, want, ordered=True)


def test_bad_cell_names_file_and_column_and_leaves_no_output(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    fx = load_fixture("dnn_binary")
    text = fx.csv.read_text().splitlines()
    good = tmp_path / "good.csv"
    good.write_text("\n".join(text) + "\n")
    bad = tmp_path / "bad.csv"
    cells = text[31].split(",")
    cells[1] = "forty"  # age: a float feature
    bad.write_text("\n".join([*text[:31], ",".join(cells), *text[32:]]) + "\n")
    out = tmp_path / "out.parquet"

    code = main(
        ["predict", str(fx.export), str(good), str(bad), "-o", str(out), "--engine", "ray", "--keep", "id"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and str(bad) in err[0] and "'age'" in err[0] and "forty" in err[0], err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_value_found_inside_the_cluster_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the driver's first-rows check, an actor finds the bad row and names its file and column."""
    monkeypatch.setattr(engine, "PRECHECK_FILES", 0)
    fx = load_fixture("dnn_multiclass") if (EXPORTS / "dnn_multiclass").is_dir() else None
    if fx is None:
        pytest.skip("fixture dnn_multiclass not generated")
    text = fx.csv.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    text[40] = text[40].replace('"[', '"[oops, ', 1)  # point: a list of two floats
    bad.write_text("\n".join(text) + "\n")
    out = tmp_path / "out.csv"
    with pytest.raises(InputError) as caught:
        engine.predict_files(fx.export, [bad], out, keep=["id"])
    assert str(bad) in caught.value.message and "point" in caught.value.message, caught.value.message
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_helper_adds_predictions_to_a_dataset(tmp_path: Path) -> None:
    import ray.data

    from tfpredict.ray import predict_dataset

    fx = load_fixture("dnn_binary")
    with Predictor.load(fx.export) as p:
        frame = fx.read_csv(p)
    frame["age"] = frame["age"].astype("float64")  # any numeric type Ray carries is cast to the model's
    ds = predict_dataset(ray.data.from_pandas(frame), fx.export, keep=["id"], outputs=["logistic", "classes"])
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(50))
    assert_matches(
        {"logistic": [r["logistic"] for r in rows], "classes": [r["classes"] for r in rows]},
        {k: fx.expected[k] for k in ("logistic", "classes")},
        "helper",
    )

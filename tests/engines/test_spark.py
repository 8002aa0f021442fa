"""The Spark engine on local[2]: every fixture export, files of every format, the local engine's rows; bad
input; the DataFrame API and the UDF; each Python worker loads the export once."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

from tfpredict import predict_files as predict_files_local  # noqa: E402
from tfpredict.cli.main import main  # noqa: E402
from tfpredict.engines import spark as engine  # noqa: E402
from tfpredict.errors import InputError  # noqa: E402
from tfpredict.predictor import Predictor  # noqa: E402

from ..conftest import EXPORTS, FIXTURES, assert_matches, load_fixture  # noqa: E402
from .conftest import FORMATS, assert_same_rows, read_rows, split_inputs  # noqa: E402

OUT_FORMATS = ("parquet", "csv", "jsonl")
STRINGS = {"classes", "all_classes"}


@pytest.fixture(scope="module")
def spark():  # type: ignore[no-untyped-def]
    """One local[2] session for the module (the engine uses a session that is already active)."""
    from pyspark.sql import SparkSession

    from tfpredict.engines.spark_session import session_settings

    builder = SparkSession.builder
    for key, value in session_settings("local[2]", None, 16).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _schema(name: str) -> dict:
    with Predictor.load(EXPORTS / name / "export") as p:
        return p.inputs


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_and_format_gives_the_local_engines_rows(spark, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fx = load_fixture(name)
    out_format = OUT_FORMATS[FIXTURES.index(name) % len(OUT_FORMATS)]
    files = split_inputs(fx.csv, _schema(name), tmp_path / "in", parts=2, formats=FORMATS)
    spark_out, local_out = tmp_path / f"spark.{out_format}", tmp_path / f"local.{out_format}"

    result = engine.predict_files(fx.export, files, spark_out, keep=["id"], batch_size=16)
    predict_files_local(fx.export, files, local_out, keep=["id"], batch_size=16)

    got, want = read_rows(spark_out, STRINGS), read_rows(local_out, STRINGS)
    assert result.rows == len(want) == len(FORMATS) * 50
    assert_same_rows(got, want, ordered=True, context=name)  # one DataFrame per file, unioned in order
    if out_format == "parquet":
        assert (
            pq.read_schema(next(spark_out.glob("*.parquet"))).remove_metadata()
            == pq.read_schema(local_out).remove_metadata()
        )
    # Against the Estimator's own predictions too (the first copy of each row).
    first: dict[int, dict] = {}
    for row in got:
        first.setdefault(int(row["id"]), row)
    by_id = [first[i] for i in sorted(first)]
    expected = {k: v for k, v in fx.expected.items() if k in by_id[0]}
    assert_matches({k: [r[k] for r in by_id] for k in expected}, expected, name)
    # local[2]: two Python workers at most, each loading this export at most once in the whole module.
    assert len(result.workers) <= 2 and all(w.loads <= 1 for w in result.workers), result.worker_lines()


def test_workers_load_once_per_worker_across_files(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """16 files are 16+ tasks on 2 task slots: still one load per Python worker, and a second job in the
    same session loads nothing (the workers kept their Predictors)."""
    fx = load_fixture("dnn_multiclass")
    files = split_inputs(fx.csv, _schema(fx.name), tmp_path / "in", parts=16, formats=("csv",))
    first = engine.predict_files(fx.export, files, tmp_path / "a.parquet", keep=["id"], batch_size=4)
    second = engine.predict_files(fx.export, files, tmp_path / "b.parquet", keep=["id"], batch_size=4)
    assert first.rows == second.rows == 50
    loads = {(w.executor, w.pid): w.loads for w in first.workers}
    assert set(loads.values()) <= {0, 1} and sum(loads.values()) <= 2, first.worker_lines()
    assert sum(w.loads for w in second.workers) == 0, second.worker_lines()
    with_rows = sum(1 for f in files if len(f.read_text().splitlines()) > 1)  # 50 rows: 13 of the 16
    assert sum(w.batches for w in first.workers) >= with_rows


def test_bad_cell_names_file_and_column_and_leaves_no_output(spark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
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
        ["predict", str(fx.export), str(good), str(bad), "-o", str(out), "--engine", "spark", "--keep", "id"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and str(bad) in err[0] and "'age'" in err[0] and "forty" in err[0], err
    assert "line 32" in err[0], err  # the local reader's message, line number included
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_value_found_in_a_worker_names_the_file(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past the driver's first-rows check, a Python worker finds the bad row and names its file and column."""
    monkeypatch.setattr(engine, "PRECHECK_FILES", 0)
    fx = load_fixture("dnn_multiclass")
    text = fx.csv.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    text[40] = text[40].replace('"[', '"[oops, ', 1)  # point: a list of two floats
    bad.write_text("\n".join(text) + "\n")
    out = tmp_path / "out.csv"
    with pytest.raises(InputError) as caught:
        engine.predict_files(fx.export, [bad], out, keep=["id"])
    assert caught.value.message.startswith(f"{bad}: ") and "point" in caught.value.message, caught.value
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_column_fails_before_spark_work(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fx = load_fixture("dnn_binary")
    lines = fx.csv.read_text().splitlines()
    bad = tmp_path / "no_city.csv"
    bad.write_text("\n".join(",".join(c for i, c in enumerate(r.split(",")) if i != 4) for r in lines) + "\n")
    with pytest.raises(InputError, match=r"missing column 'city'.*--allow-missing city"):
        engine.predict_files(fx.export, [fx.csv, bad], tmp_path / "out.parquet")
    out = tmp_path / "ok.parquet"
    engine.predict_files(fx.export, [bad], out, keep=["id"], allow_missing=["city"])
    local = tmp_path / "local.parquet"
    predict_files_local(fx.export, [bad], local, keep=["id"], allow_missing=["city"])
    assert_same_rows(read_rows(out), read_rows(local), ordered=True)


def test_predict_a_dataframe(spark) -> None:  # type: ignore[no-untyped-def]
    from tfpredict.spark import predict, stats_accumulator

    fx = load_fixture("dnn_binary")
    # Spark's own CSV typing: zip as text (leading zeros), age/hours as doubles for float32 features.
    df = spark.read.csv(str(fx.csv), header=True, schema="id long, age double, hours double, "
                        "color string, city string, zip string")  # fmt: skip
    stats = stats_accumulator(spark)
    predictions = predict(df, fx.export, keep=["id"], outputs=["logistic", "classes"], stats=stats)
    assert predictions.columns == ["id", "logistic", "classes"]
    rows = sorted(predictions.collect(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(50))
    assert_matches(
        {"logistic": [r["logistic"] for r in rows], "classes": [r["classes"] for r in rows]},
        {k: fx.expected[k] for k in ("logistic", "classes")},
        "predict(df)",
    )
    assert sum(s.rows for s in stats.value.values()) == 50


@pytest.mark.parametrize("kind", ["arrow", "pandas"])
def test_the_udf(spark, kind: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """predict_udf in withColumn: an Arrow UDF on pyspark 4.1+, a pandas UDF where Arrow UDFs are missing."""
    import pyspark.sql.functions as sf

    from tfpredict.spark import predict_udf

    if kind == "pandas":
        monkeypatch.delattr(sf, "arrow_udf", raising=False)
    elif not hasattr(sf, "arrow_udf"):
        pytest.skip("pyspark < 4.1 has no arrow_udf")
    fx = load_fixture("dnn_binary")
    df = spark.read.csv(str(fx.csv), header=True, schema="id long, age double, hours double, "
                        "color string, city string, zip string")  # fmt: skip
    score = predict_udf(fx.export, outputs=["logistic", "probabilities"])
    scored = df.withColumn("p", score()).select("id", "p.logistic", "p.probabilities")
    rows = sorted(scored.collect(), key=lambda r: r["id"])
    assert_matches(
        {"logistic": [r["logistic"] for r in rows], "probabilities": [r["probabilities"] for r in rows]},
        {k: fx.expected[k] for k in ("logistic", "probabilities")},
        f"predict_udf ({kind})",
    )


def test_dataframe_bad_value_names_the_column(spark) -> None:  # type: ignore[no-untyped-def]
    from tfpredict.spark import predict

    fx = load_fixture("dnn_binary")
    df = spark.read.csv(str(fx.csv), header=True)  # every column as text
    df = df.withColumn("age", __import__("pyspark.sql.functions").sql.functions.lit("old"))
    with pytest.raises(Exception) as caught:
        predict(df, fx.export).collect()
    assert engine.find_tfpredict_error(str(caught.value)) is not None
    assert "column 'age': expected a number, found 'old'" in str(caught.value)

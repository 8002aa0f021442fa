"""predict_files: every fixture export, every output and input format, equal to Estimator.predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfpredict import Predictor, predict_files
from tfpredict.errors import InputError

from .conftest import FIXTURES, Fixture, assert_matches, load_fixture
from .io.formats import read_output, string_outputs, write_as

_PREDICTORS: dict[str, Predictor] = {}


def predictor_of(fx: Fixture) -> Predictor:
    """One loaded Predictor per fixture for the whole module (loading is the slow part)."""
    if fx.name not in _PREDICTORS:
        _PREDICTORS[fx.name] = Predictor.load(fx.export)
    return _PREDICTORS[fx.name]


def as_arrays(columns: dict[str, list]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in columns.items()}


@pytest.mark.parametrize("out_format", ["parquet", "csv", "jsonl"])
def test_outputs_equal_estimator_predict(fixture: Fixture, out_format: str, tmp_path: Path) -> None:
    out = tmp_path / f"predictions.{out_format}"
    result = predict_files(predictor_of(fixture), fixture.csv, out, keep=["id"])
    n = len(next(iter(fixture.expected.values())))
    assert result.rows == n and out.is_file()
    got = read_output(out, set(string_outputs(fixture.expected)))
    assert [int(i) for i in got["id"]] == list(range(n))
    assert_matches(as_arrays(got), fixture.expected, f"{fixture.name} -> {out_format}")


@pytest.mark.parametrize("in_format", ["csv.gz", "parquet", "jsonl", "jsonl.gz", "tfrecord", "tfrecord.gz"])
def test_every_input_format_gives_the_same_output(fixture: Fixture, in_format: str, tmp_path: Path) -> None:
    predictor = predictor_of(fixture)
    source = write_as(in_format, fixture.csv, predictor.inputs, tmp_path)
    out = tmp_path / "predictions.parquet"
    predict_files(predictor, source, out, keep=["id"])
    got = read_output(out)
    assert [int(i) for i in got["id"]] == list(range(len(got["id"])))  # CSV ids are text, others ints
    assert_matches(as_arrays(got), fixture.expected, f"{fixture.name} <- {in_format}")


@pytest.mark.parametrize("batch_size, workers", [(7, 1), (3, 3), (1000, 2)])
def test_order_is_input_order_whatever_the_batching(batch_size: int, workers: int, tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    out = tmp_path / "p.parquet"
    predict_files(
        predictor_of(fx), [fx.csv, fx.csv], out, keep=["id"], batch_size=batch_size, model_workers=workers
    )
    got = read_output(out)
    n = len(fx.expected["logits"])
    assert got["id"] == [str(i) for i in range(n)] * 2  # CSV ids pass through as text
    np.testing.assert_allclose(
        np.asarray(got["logits"]), np.ravel(fx.expected["logits"] * 2), rtol=1e-5, atol=1e-5
    )


def test_globs_directories_and_several_files(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    p = predictor_of(fx)
    (tmp_path / "in").mkdir()
    a = write_as("parquet", fx.csv, p.inputs, tmp_path / "in")
    b = write_as("csv", fx.csv, p.inputs, tmp_path / "in")
    out = tmp_path / "p.parquet"
    assert predict_files(p, tmp_path / "in", out).rows == 100  # data.csv, data.parquet: sorted
    assert predict_files(p, str(tmp_path / "in" / "*.parquet"), out).rows == 50
    assert predict_files(p, [a, b, a], out).rows == 150


def test_outputs_selection_and_signature_types(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    out = tmp_path / "p.parquet"
    predict_files(predictor_of(fx), fx.csv, out, outputs=["probabilities", "classes"], keep=["id", "zip"])
    schema = pq.read_schema(out)
    assert schema.names == ["id", "zip", "probabilities", "classes"]
    assert schema.field("probabilities").type == pa.list_(pa.float32())
    assert schema.field("classes").type == pa.string()
    assert pq.read_table(out).column("zip").to_pylist()[0] == "00501"  # digits stay text


def test_empty_input_writes_an_empty_output_with_the_schema(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    empty = tmp_path / "empty.csv"
    empty.write_text(fx.csv.read_text().splitlines()[0] + "\n")
    for ext in ("parquet", "csv", "jsonl"):
        out = tmp_path / f"p.{ext}"
        result = predict_files(predictor_of(fx), empty, out, keep=["id"])
        assert result.rows == 0 and out.is_file()
    schema = pq.read_schema(tmp_path / "p.parquet")
    assert schema.names[:2] == ["id", "class_ids"] or "probabilities" in schema.names
    assert schema.field("probabilities").type == pa.list_(pa.float32())
    assert (tmp_path / "p.csv").read_text().startswith('"id"')
    assert (tmp_path / "p.jsonl").read_text() == ""


def test_bad_rows_are_set_aside_and_the_good_rows_kept(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    lines = fx.csv.read_text().splitlines()
    header = lines[0].split(",")
    age = header.index("age")
    bad = {3: "abc", 10: "1.2.3"}
    for row, value in bad.items():
        cells = lines[row + 1].split(",")
        cells[age] = value
        lines[row + 1] = ",".join(cells)
    cells = lines[20 + 1].split(",")
    cells[age] = ""  # age has no default: a missing value is a bad row too
    lines[21] = ",".join(cells)
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(lines) + "\n")
    out, rejects = tmp_path / "p.parquet", tmp_path / "bad.jsonl"
    result = predict_files(predictor_of(fx), data, out, keep=["id"], bad_rows=rejects, batch_size=8)
    assert result.rows == 47 and result.bad_rows == 3
    got = read_output(out)
    good = [i for i in range(50) if i not in (3, 10, 20)]
    assert got["id"] == [str(i) for i in good]
    np.testing.assert_allclose(got["logits"], np.ravel(fx.expected["logits"])[good], rtol=1e-5, atol=1e-5)
    import json

    records = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [r["line"] for r in records] == [5, 12, 22]
    assert "'abc'" in records[0]["reason"] and "age" in records[0]["reason"]
    assert "age" in records[2]["reason"]


def test_bad_value_without_bad_rows_names_file_line_column(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    lines = fx.csv.read_text().splitlines()
    age = lines[0].split(",").index("age")
    cells = lines[31].split(",")
    cells[age] = "forty"
    lines[31] = ",".join(cells)
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.parquet"
    with pytest.raises(InputError) as info:
        predict_files(predictor_of(fx), data, out)
    assert (
        "line 32" in info.value.message and "'age'" in info.value.message and "'forty'" in info.value.message
    )
    assert not out.exists() and list(tmp_path.iterdir()) == [data]


def test_missing_required_value_names_the_line(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    lines = fx.csv.read_text().splitlines()
    age = lines[0].split(",").index("age")
    cells = lines[40].split(",")
    cells[age] = ""
    lines[40] = ",".join(cells)
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        predict_files(predictor_of(fx), data, tmp_path / "p.parquet", batch_size=16)
    assert "line 41" in info.value.message and "age" in info.value.message


def test_result_object(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    result = predict_files(predictor_of(fx), fx.csv, tmp_path / "p.csv")
    assert result.rows == 50 and result.bad_rows == 0 and result.seconds > 0
    assert result.rows_per_second > 0 and "50 rows" in result.summary()


def test_fixture_list_is_not_empty() -> None:
    assert "dnn_binary" in FIXTURES

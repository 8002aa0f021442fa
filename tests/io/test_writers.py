"""Writers: one column per output, lists as list columns / JSON lists, nothing left behind on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfpredict.errors import OutputError
from tfpredict.io.writers import (
    check_output_path,
    column_from_numpy,
    json_text,
    open_writer,
    output_format,
    output_type,
    outputs_to_batch,
    write_atomically,
)

OUTPUTS = {
    "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32),
    "classes": np.array([[b"yes"], [b"no"]], object),
    "logits": np.array([[1.5], [-2.0]], np.float32),
}
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("probabilities", output_type("float32", (None, 2))),
        ("classes", output_type("string", (None, 1))),
        ("logits", output_type("float32", (-1, 1))),
    ]
)


def batch() -> pa.RecordBatch:
    return outputs_to_batch(OUTPUTS, SCHEMA, pa.record_batch({"id": [10, 11]}))


def test_types_lists_and_squeezed_single_values() -> None:
    b = batch()
    assert b.schema.field("probabilities").type == pa.list_(pa.float32())
    assert b.column("classes").to_pylist() == ["yes", "no"]
    assert b.column("logits").to_pylist() == [1.5, -2.0]
    nested = column_from_numpy(np.arange(12).reshape(2, 3, 2))
    assert nested.to_pylist()[1] == [[6, 7], [8, 9], [10, 11]]


@pytest.mark.parametrize("name", ["p.parquet", "p.csv", "p.jsonl", "p.csv.gz", "p.jsonl.gz"])
def test_every_format_round_trips(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    with write_atomically(out) as tmp:
        w = open_writer(tmp, SCHEMA, *output_format(out))
        w.write(batch())
        w.write(batch())
        w.close()
    assert [p.name for p in tmp_path.iterdir()] == [name]
    if name.endswith(".parquet"):
        assert pq.read_table(out).column("probabilities").to_pylist()[1] == [0.5, 0.5]
    elif ".csv" in name:
        import pyarrow.csv as pacsv

        t = pacsv.read_csv(out)
        assert t.num_rows == 4 and t.column("probabilities").to_pylist()[0] == "[0.25, 0.75]"
    else:
        import gzip

        text = (gzip.open(out, "rt") if name.endswith(".gz") else out.open()).read()
        rows = [json.loads(line) for line in text.splitlines()]
        assert rows[1] == {"id": 11, "probabilities": [0.5, 0.5], "classes": "no", "logits": -2.0}


def test_json_text_escapes_and_nulls() -> None:
    col = pa.array(['a"b\\c\nd', None, "é\x01"])
    assert [json.loads(t) for t in json_text(col).to_pylist()] == ['a"b\\c\nd', None, "é\x01"]
    assert json_text(pa.array([0.1, float("nan")], pa.float32())).to_pylist() == ["0.1", "null"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    with pytest.raises(RuntimeError):
        with write_atomically(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_output_path_checks(tmp_path: Path) -> None:
    assert output_format(tmp_path / "x") == ("parquet", None)
    with pytest.raises(OutputError, match="unknown output format '.txt'"):
        output_format(tmp_path / "x.txt")
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.csv")

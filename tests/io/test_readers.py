"""Readers: model types, not the reader's guess; streaming in bounded batches; bad input named precisely."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfpredict.errors import InputError
from tfpredict.features import FeatureSpec
from tfpredict.io.readers import detect_format, expand_inputs, read_csv, read_inputs, read_jsonl, rebatch

SCHEMA = {
    "x": FeatureSpec("x", "float32", (), "dense"),
    "n": FeatureSpec("n", "int64", (), "dense", default=0),
    "zip": FeatureSpec("zip", "string", (None,), "varlen"),
    "v": FeatureSpec("v", "float32", (2,), "dense", default=[0.0, 0.0]),
}
CSV = 'id,x,n,zip,v,extra\n7,1,2,02134,"[0.5, 1.25]",a\n8,2.5,,00501,,b\n9,-3e2,4,,"[1, 2]",c\n'


def one_file(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_csv_columns_take_the_model_types(tmp_path: Path) -> None:
    (f,) = expand_inputs([one_file(tmp_path, "a.csv", CSV)])
    (chunk,) = list(read_csv(f, SCHEMA, 100, keep=["id"]))
    b = chunk.batch
    assert b.schema.field("x").type == pa.float32()  # "1" read as a float for a float feature
    assert b.schema.field("n").type == pa.int64()
    assert b.column("zip").to_pylist() == ["02134", "00501", None]  # digits stay text; empty = missing
    assert b.column("v").to_pylist() == ["[0.5, 1.25]", None, "[1, 2]"]  # JSON lists for the core
    assert b.column("id").to_pylist() == ["7", "8", "9"]  # --keep ids pass through as written
    assert "extra" not in b.schema.names  # only what the model or --keep needs is read


def test_gzip_csv_and_rebatching(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i},{i},z,\n" for i in range(1000))
    path = tmp_path / "big.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("id,x,n,zip,v\n" + rows)
    (f,) = expand_inputs([path])
    assert (f.format, f.compression) == ("csv", "gzip")
    chunks = list(read_csv(f, SCHEMA, 300, block_size=4096))
    assert [c.num_rows for c in chunks] == [300, 300, 300, 100]
    assert [c.first_row for c in chunks] == [0, 300, 600, 900]
    assert chunks[-1].batch.column("x").to_pylist()[-1] == 999.0


def test_rebatch_exact_sizes() -> None:
    parts = [
        pa.record_batch({"a": list(range(i, i + k))}) for i, k in ((0, 5), (5, 1), (6, 9), (15, 0), (15, 3))
    ]
    out = list(rebatch(parts, 4))
    assert [b.num_rows for b in out] == [4, 4, 4, 4, 2]
    assert sum((b.column(0).to_pylist() for b in out), []) == list(range(18))


def test_bad_number_names_file_line_column_and_value(tmp_path: Path) -> None:
    text = "x,n\n" + "".join(f"{i},1\n" for i in range(5000)) + "12a,1\n"
    (f,) = expand_inputs([one_file(tmp_path, "bad.csv", text)])
    with pytest.raises(InputError) as info:
        list(read_csv(f, SCHEMA, 1000, block_size=4096, allow_missing=True))
    assert info.value.message == f"{f.path}, line 5002, column 'x': expected a number, found '12a'"


def test_lenient_csv_sets_bad_rows_aside(tmp_path: Path) -> None:
    text = "x,n\n1,1\nfoo,2\n3,x3\n4,4\n"
    (f,) = expand_inputs([one_file(tmp_path, "bad.csv", text)])
    (chunk,) = list(read_csv(f, SCHEMA, 100, lenient=True, allow_missing=True))
    assert chunk.batch.column("x").to_pylist() == [1.0, 4.0]
    assert [(b.line, b.reason) for b in chunk.bad_rows] == [
        (3, "column 'x': expected a number, found 'foo'"),
        (4, "column 'n': expected an integer, found 'x3'"),
    ]


def test_missing_column_names_it_and_what_was_found(tmp_path: Path) -> None:
    (f,) = expand_inputs([one_file(tmp_path, "a.csv", "n,zip\n1,a\n")])
    with pytest.raises(
        InputError, match=r"a.csv: missing columns 'x', 'v' needed by the model .*columns found: n, zip"
    ):
        list(read_csv(f, SCHEMA, 10))
    with pytest.raises(InputError, match=r"a.csv: missing column 'x' needed by the model"):
        list(read_csv(f, SCHEMA, 10, allow_missing=["v"]))  # allowing an optional column keeps x required


def test_jsonl_streams_in_blocks_with_model_types(tmp_path: Path) -> None:
    lines = [json.dumps({"x": i, "n": i, "zip": "0123", "id": i}) for i in range(3000)]
    (f,) = expand_inputs([one_file(tmp_path, "a.jsonl", "\n".join(lines) + "\n")])
    chunks = list(read_jsonl(f, SCHEMA, 1000, keep=["id"], block_size=8192, allow_missing=["v"]))
    assert [c.num_rows for c in chunks] == [1000, 1000, 1000]
    assert chunks[0].batch.schema.field("x").type == pa.float32()  # a JSON int feeds a float feature
    assert chunks[2].batch.column("id").to_pylist()[-1] == 2999


def test_parquet_casts_and_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int32()), "zip": ["1", "2"]}), path)
    (chunk,) = list(read_inputs(expand_inputs([path]), SCHEMA, 10, allow_missing=True))
    assert chunk.batch.schema.field("x").type == pa.float32()
    bad = tmp_path / "b.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match=r"b.parquet: not a readable Parquet file"):
        list(read_inputs(expand_inputs([bad]), SCHEMA, 10))


def test_expand_inputs_dirs_globs_and_errors(tmp_path: Path) -> None:
    for name in ("b.csv", "a.parquet", "c.jsonl.gz", "notes.txt", ".hidden.csv"):
        (tmp_path / name).write_text("x\n")
    assert [f.path.name for f in expand_inputs([tmp_path])] == ["a.parquet", "b.csv", "c.jsonl.gz"]
    assert [f.path.name for f in expand_inputs([str(tmp_path / "*.csv")])] == ["b.csv"]
    with pytest.raises(InputError, match="input file not found"):
        expand_inputs([tmp_path / "nope.csv"])
    with pytest.raises(InputError, match="no input file matches"):
        expand_inputs([str(tmp_path / "*.tfrecord")])
    with pytest.raises(InputError, match="unknown input format"):
        detect_format(tmp_path / "notes.txt")


def test_jsonl_bad_value_names_its_line(tmp_path: Path) -> None:
    lines = [json.dumps({"x": i, "zip": "a"}) for i in range(2000)]
    lines[1500] = json.dumps({"x": "many", "zip": "a"})
    (f,) = expand_inputs([one_file(tmp_path, "a.jsonl", "\n".join(lines) + "\n")])
    with pytest.raises(InputError) as info:
        list(read_jsonl(f, SCHEMA, 500, block_size=4096, allow_missing=True))
    assert info.value.message == f"{f.path}, line 1501, column 'x': expected a number, found 'many'"


def test_parquet_text_in_a_number_column_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": ["1", "2", "3", "lots"], "zip": ["a"] * 4}), path, row_group_size=2)
    with pytest.raises(InputError) as info:
        list(read_inputs(expand_inputs([path]), SCHEMA, 3, allow_missing=True))
    assert info.value.message == f"{path}, row 4, column 'x': expected a number, found 'lots'"

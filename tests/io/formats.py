"""Test helper: the rows of a fixture CSV written as Parquet, JSON Lines, gzip CSV and TFRecord.

Typed by the model's feature schema the way the fixture generator meant the CSV (an empty cell is a missing
value, a JSON-list cell is a multi-valued feature), so every format carries exactly the same rows.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tfpredict.features import FeatureSpec


def typed_rows(csv_path: Path, schema: dict[str, FeatureSpec]) -> list[dict[str, Any]]:
    with csv_path.open(newline="") as f:
        raw = list(csv.DictReader(f))
    rows = []
    for r in raw:
        row: dict[str, Any] = {}
        for name, text in r.items():
            spec = schema.get(name)
            if text == "":
                row[name] = None
            elif spec is None:
                row[name] = int(text) if name == "id" else text
            elif text.startswith("["):
                row[name] = [_value(v, spec) for v in json.loads(text)]
            else:
                row[name] = _value(text, spec)
        rows.append(row)
    return rows


def _value(v: Any, spec: FeatureSpec) -> Any:
    if spec.dtype == "string":
        return str(v)
    if spec.dtype.startswith("int") or spec.dtype.startswith("uint"):
        return int(v)
    return float(v)


def write_as(fmt: str, csv_path: Path, schema: dict[str, FeatureSpec], target_dir: Path) -> Path:
    """The fixture CSV's rows as a file of format fmt ("csv.gz", "parquet", "jsonl", "tfrecord", ...)."""
    out = target_dir / f"data.{fmt}"
    if fmt == "csv":
        shutil.copy(csv_path, out)
        return out
    if fmt == "csv.gz":
        with csv_path.open("rb") as src, gzip.open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return out
    rows = typed_rows(csv_path, schema)
    if fmt == "parquet":
        names = list(rows[0])
        columns = {}
        for n in names:
            values = [r[n] for r in rows]
            spec = schema.get(n)
            columns[n] = pa.array(values, _arrow_type(spec, values))
        pq.write_table(pa.table(columns), out)
    elif fmt in ("jsonl", "jsonl.gz"):
        text = "".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows)
        if fmt.endswith(".gz"):
            with gzip.open(out, "wt") as f:
                f.write(text)
        else:
            out.write_text(text)
    elif fmt in ("tfrecord", "tfrecord.gz"):
        import tensorflow as tf

        options = tf.io.TFRecordOptions(compression_type="GZIP" if fmt.endswith(".gz") else "")
        with tf.io.TFRecordWriter(str(out), options) as w:
            for r in rows:
                w.write(to_example(r, schema).SerializeToString())
    else:
        raise ValueError(fmt)
    return out


def _arrow_type(spec: FeatureSpec | None, values: list[Any]) -> pa.DataType | None:
    if spec is None:
        return None
    scalar = (
        pa.string()
        if spec.dtype == "string"
        else pa.int64()
        if spec.dtype.startswith("int")
        else pa.float32()
    )
    if any(isinstance(v, list) for v in values):
        return pa.list_(scalar)
    return scalar


def to_example(row: dict[str, Any], schema: dict[str, FeatureSpec]) -> Any:
    import tensorflow as tf

    feature = {}
    for name, value in row.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        spec = schema.get(name)
        dtype = spec.dtype if spec is not None else ("int64" if name == "id" else "string")
        if dtype == "string":
            feature[name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values])
            )
        elif dtype.startswith("int"):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_output(path: Path, strings: set[str] = frozenset()) -> dict[str, list[Any]]:  # type: ignore[assignment]
    """An output file (Parquet / CSV / JSON Lines) as {column: values}, list cells parsed.

    strings: CSV columns to read as text (a class name "0" must stay "0").
    """
    name = path.name
    if name.endswith(".parquet"):
        t = pq.read_table(path)
        return {k: t.column(k).to_pylist() for k in t.column_names}
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        import pyarrow.csv as pacsv

        t = pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={k: pa.string() for k in strings})
        )
        cols: dict[str, list[Any]] = {}
        for k in t.column_names:
            values = t.column(k).to_pylist()
            if pa.types.is_string(t.column(k).type) and any(
                isinstance(v, str) and v.startswith("[") for v in values
            ):
                values = [json.loads(v) for v in values]
            cols[k] = values
        return cols
    opener = gzip.open if name.endswith(".gz") else open
    cols = {}
    with opener(path, "rt") as f:
        for line in f:
            for k, v in json.loads(line).items():
                cols.setdefault(k, []).append(v)
    return cols


def string_outputs(expected: dict[str, list[Any]]) -> set[str]:
    def first(v: Any) -> Any:
        while isinstance(v, list) and v:
            v = v[0]
        return v

    return {k: v for k, v in expected.items() if v and isinstance(first(v[0]), str)}.keys()

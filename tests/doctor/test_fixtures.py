"""doctor works on every committed fixture export: Estimator exports with parsing receivers, a raw-receiver
Estimator export and a TF2 tf.Module (the CSVs are 50 rows: the whole input is the sample)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Fixture


def test_doctor_on_fixture(fixture: Fixture) -> None:
    from tfpredict.doctor import doctor

    d = doctor(fixture.export, fixture.csv, seconds=2.5)
    x = json.loads(json.dumps(d.to_dict()))
    assert x["bottleneck"] in ("input", "model", "output")
    assert x["sample_rows"] == 50 and x["whole_input_read"] is True
    assert all(s["rows_per_s"] > 0 for s in x["stages"].values())
    assert x["stages"]["end_to_end"]["rows"] == 50
    assert [p["batch_size"] for p in x["sweeps"]["batch_size"]][:2] == [1, 32]
    assert x["top_ops"], "the traced run found no ops"
    assert sum(x["op_categories"].values()) == pytest.approx(1, abs=1e-3)
    assert x["recommended"]["batch_size"] >= 1


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "tfrecord"])
def test_doctor_on_other_input_formats(fmt: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same 50 bench_dnn rows as Parquet, JSON Lines and TFRecord (tf.Example) files."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import load_fixture
    from tfpredict.doctor import doctor

    fixture = load_fixture("bench_dnn")
    frame = pd.read_csv(fixture.csv, dtype={"cat": str, "tok": str})
    path = tmp_path / f"rows.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        import tensorflow as tf

        def feature(v):  # type: ignore[no-untyped-def]
            if isinstance(v, str):
                return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))

        with tf.io.TFRecordWriter(str(path)) as w:
            for row in frame.drop(columns=["id"]).to_dict("records"):
                example = tf.train.Example(
                    features=tf.train.Features(feature={k: feature(v) for k, v in row.items()})
                )
                w.write(example.SerializeToString())
    x = doctor(fixture.export, path, seconds=3).to_dict()
    assert x["input_format"] == fmt and x["sample_rows"] == 50
    assert x["stages"]["read"]["label"].startswith("read ")
    assert x["stages"]["end_to_end"]["rows"] == 50
    assert x["bottleneck"] in ("input", "model", "output")


def test_a_small_input_read_past_the_time_slice_is_still_whole() -> None:
    """On a slow machine the first chunk of a 50-row file can take longer than the reading slice: the
    short chunk says the file ended, so one more read learns that the input was read whole (CI once saw
    'not all read')."""
    from tests.conftest import load_fixture
    from tfpredict import Predictor
    from tfpredict.doctor.sample import input_files, read_sample

    fixture = load_fixture("bench_dnn")
    predictor = Predictor.load(fixture.export)
    sample = read_sample(input_files(fixture.csv), dict(predictor.inputs), 1024, 1000, 0.0, 1e-9)
    assert sample.rows == 50 and sample.exhausted

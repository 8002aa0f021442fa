"""The verdict and the recommendations from given measurements (no TensorFlow, no timing noise)."""

from __future__ import annotations

import pytest

from tfpredict.doctor.advise import recommendations, recommended_settings, verdict
from tfpredict.doctor.measure import Measurements, OpTime, Point, Stage


def measurements(
    read: float, convert: float, model: float, write: float, e2e: dict | None = None
) -> Measurements:
    stages = {
        "read": Stage("read", "read CSV", int(read), 1.0),
        "convert": Stage("convert", "feature conversion", int(convert), 1.0),
        "model": Stage("model", "model (batch 8,192)", int(model), 1.0),
        "write": Stage("write", "write parquet", int(write), 1.0),
        "end_to_end": Stage("end_to_end", "end to end (pipelined)", 100_000, 1.0),
    }
    m = Measurements(
        export="e",
        data="d.csv",
        input_format="csv",
        output_format="parquet",
        signature="s",
        model_path="features",
        cpus=2,
        sample_rows=100_000,
        file_exhausted=False,
        batch_size=8192,
        stages=stages,
    )
    for (b, t, i), rate in (e2e or {(8192, None, None): 100_000.0}).items():
        m.end_to_end_sweep.append(Point({"batch_size": b, "threads": t, "inter_op_threads": i}, rate))
    return m


@pytest.mark.parametrize(
    ("rates", "expected", "phrase", "slowest"),
    [
        (
            (210_000, 5_000_000, 1_900_000, 3_000_000),
            "input",
            "the input is 9.4x slower than the model",
            "read CSV: 210,000 rows/s",
        ),
        (
            (2_000_000, 5_000_000, 9_000, 3_000_000),
            "model",
            "the model is 159x slower than the input",
            "model (batch 8,192): 9,000 rows/s",
        ),
        (
            (2_000_000, 5_000_000, 1_500_000, 100_000),
            "output",
            "writing the output is 15x slower than the model",
            "write parquet: 100,000 rows/s",
        ),
    ],
)
def test_verdict_names_the_slowest_stage_with_evidence(
    rates: tuple, expected: str, phrase: str, slowest: str
) -> None:
    v = verdict(measurements(*rates))
    assert v.bottleneck == expected
    assert phrase in v.evidence
    assert slowest in v.evidence  # the slowest stage's own measured rate, as the evidence for the verdict


def test_recommends_the_best_measured_settings_with_their_gain() -> None:
    runs = {(8192, None, None): 100_000.0, (32768, None, None): 135_000.0, (32768, 2, 1): 140_000.0}
    m = measurements(200_000, 5_000_000, 300_000, 3_000_000, runs)
    m.xla_sweep = [Point({"xla": False}, 300_000.0), Point({"xla": True}, 360_000.0)]
    m.per_row = Point({"batch_size": 1}, 350.0)
    m.format_sweep = [
        Point({"format": "csv", "step": "read"}, 200_000.0),
        Point({"format": "parquet", "step": "read"}, 1_200_000.0),
    ]
    m.op_categories = {"string hashing / vocabulary": 0.6, "dense layers": 0.4}
    m.top_ops = [OpTime("hash", "StringToHashBucketFast", "string hashing / vocabulary", 3.0, 0.6)]
    v = verdict(m)
    chosen = recommended_settings(m, v.bottleneck)
    assert (chosen.batch_size, chosen.threads, chosen.inter_op_threads) == (32768, 2, 1)
    assert chosen.gain == pytest.approx(0.4)
    assert chosen.flags() == ["--batch-size", "32768", "--threads", "2", "--inter-op-threads", "1"]
    texts = {r.kind: r.text for r in recommendations(m, v, chosen)}
    assert texts["batch_size"].startswith("use --batch-size 32768 (+35% end to end over 8,192)")
    assert texts["threads"].startswith("use --threads 2 --inter-op-threads 1 (+4%")
    assert v.bottleneck == "input" and not chosen.xla  # XLA's +20% would not help an input-bound job
    assert texts["input_format"].startswith(
        "the input is the bottleneck: convert your CSV to Parquet: reading is 6.0x faster"
    )
    assert texts["xla"].startswith("XLA makes the model +20% faster, but the model is not the bottleneck")
    assert "you are 400x faster batched" in texts["per_row"]
    assert "60% of op time goes to string hashing / vocabulary" in texts["model_ops"]


def test_keeps_defaults_when_nothing_is_measurably_better() -> None:
    runs = {(8192, None, None): 100_000.0, (1024, None, None): 101_000.0, (8192, 1, 1): 90_000.0}
    m = measurements(200_000, 5_000_000, 150_000, 3_000_000, runs)
    v = verdict(m)
    chosen = recommended_settings(m, v.bottleneck)
    assert (chosen.batch_size, chosen.threads, chosen.inter_op_threads) == (8192, None, None)
    texts = {r.kind: r.text for r in recommendations(m, v, chosen)}
    assert texts["batch_size"].startswith("keep --batch-size 8192")
    assert texts["threads"].startswith("keep TensorFlow's default thread pools")


def test_xla_recommended_only_when_the_model_is_the_bottleneck() -> None:
    m = measurements(2_000_000, 5_000_000, 9_000, 3_000_000)
    m.xla_sweep = [Point({"xla": False}, 9_000.0), Point({"xla": True}, 11_000.0)]
    v = verdict(m)
    chosen = recommended_settings(m, v.bottleneck)
    assert chosen.xla and "--xla" in chosen.flags()
    texts = {r.kind: r.text for r in recommendations(m, v, chosen)}
    assert texts["xla"] == "the model is the bottleneck: XLA gives +22% (add --xla)"

"""Issue 3's question: how much faster is `Predictor.predict` than what Estimator owners run today?

One run, one machine, the same 100,000-row table for every contender:
  - Predictor.predict on a pandas DataFrame (the fast path: parsed features fed past ParseExample),
  - the export's own signature on tf.Examples serialized in Python (the usual hand-written replacement),
  - Estimator.predict with a batched (512) + prefetched input_fn, and one call per row (TF 2.15 venv),
  - single-row latency: predict(dict of scalars) vs one serialized row + signature call (p50).

    python benchmarks/predictor.py [--rows 100000] [--venv venv215]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from bench_data import bench_rows  # noqa: E402

EXPORT = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "export"


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def example_of(row: dict, tf) -> bytes:
    feats = {}
    for key, value in row.items():
        if isinstance(value, str):
            feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        else:
            feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def run_estimator(venv: Path, csv: Path, mode: str, save: Path | None = None) -> dict | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    cmd = [str(python), str(HERE / "estimator_predict.py"), "--csv", str(csv), "--mode", mode]
    if save:
        cmd += ["--save", str(save)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"Estimator.predict ({mode}) failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--venv", type=Path, default=REPO.parent / "venv215", help="TF 2.15 + estimator venv")
    parser.add_argument("--single", type=int, default=300, help="single-row calls to time")
    args = parser.parse_args()

    import tensorflow as tf

    from tfpredict import Predictor

    frame = bench_rows(args.rows, seed=1)
    rows = frame.to_dict("records")
    tmp = Path(tempfile.mkdtemp())
    csv = tmp / "rows.csv"
    frame.to_csv(csv, index=False)
    results = []

    predictor = Predictor.load(EXPORT)
    assert predictor.path == "features"
    predictor.predict(frame.head(1000))
    t = best_of(lambda: predictor.predict(frame))
    ours = predictor.predict(frame)["probabilities"][:, 1]
    results.append(("Predictor.predict (DataFrame)", args.rows / t))

    signature = tf.saved_model.load(str(predictor.export_dir)).signatures["predict"]

    def serialize_then_call() -> np.ndarray:
        out = []
        for i in range(0, len(rows), 512):
            batch = [example_of(r, tf) for r in rows[i : i + 512]]
            out.append(signature(examples=tf.constant(batch))["probabilities"].numpy()[:, 1])
        return np.concatenate(out)

    theirs = serialize_then_call()
    t = best_of(serialize_then_call, repeat=1)
    results.append(("serialize tf.Example in Python + signature", args.rows / t))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)

    est_probs = tmp / "estimator.npy"
    batched = run_estimator(args.venv, csv, "batched", save=est_probs)
    if batched:
        results.append(("Estimator.predict, batched 512 + prefetch", batched["rows_per_s"]))
        np.testing.assert_allclose(ours, np.load(est_probs), rtol=1e-5, atol=1e-5)
    per_row = run_estimator(args.venv, csv, "per-row")
    if per_row:
        results.append(("Estimator.predict, one call per row", per_row["rows_per_s"]))

    # Single-row latency, p50 over many calls.
    ours_ms, theirs_ms = [], []
    for i in range(args.single):
        row = rows[i]
        start = time.perf_counter()
        predictor.predict(row)
        ours_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        signature(examples=tf.constant([example_of(row, tf)]))["probabilities"].numpy()
        theirs_ms.append((time.perf_counter() - start) * 1000)

    print(
        "\nbench_dnn (DNNClassifier 256/128/64; 8 numeric, vocabulary, hash-bucket embedding), "
        f"{args.rows:,} rows"
    )
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} cores; "
        "outputs checked equal (1e-5) across contenders\n"
    )
    ours_rate = results[0][1]
    print(f"| {'path':<45} | {'rows/s':>12} | {'Predictor is':>13} |")
    print(f"|{'-' * 47}|{'-' * 14}|{'-' * 15}|")
    for name, rate in results:
        print(f"| {name:<45} | {rate:>12,.1f} | {ours_rate / rate:>12,.1f}x |")
    p50_ours, p50_theirs = statistics.median(ours_ms), statistics.median(theirs_ms)
    print(
        f"\nsingle row, p50: Predictor.predict(dict) {p50_ours:.3f} ms; "
        f"serialize one tf.Example + signature {p50_theirs:.3f} ms ({p50_theirs / p50_ours:.1f}x)"
    )
    print("\ntargets: >= 10x Estimator batched, >= 20x serialize-then-call, single-row p50 <= hand-written")
    checks = [("vs serialize-then-call >= 20x", ours_rate / results[1][1] >= 20)]
    if batched:
        checks.append(("vs Estimator batched >= 10x", ours_rate / batched["rows_per_s"] >= 10))
    checks.append(("single-row p50 <= hand-written", p50_ours <= p50_theirs))
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()

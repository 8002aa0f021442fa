"""Time Estimator.predict on bench_dnn, the way its owners run it today. Runs in a TF 2.15 +
tensorflow-estimator venv (Estimators are gone from later TensorFlow), called by the other benchmarks:

    venv215/bin/python benchmarks/estimator_predict.py --csv rows.csv --mode batched [--save probs.npy]

Prints one JSON line: rows, seconds, rows_per_s. Timed inside the process, from reading the CSV to the last
prediction, so TensorFlow's own start-up is excluded. --mode per-row calls predict once per row (what a
service does per request: the graph is rebuilt and the checkpoint restored on every call).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from make_fixtures import bench_dnn_estimator  # noqa: E402

MODEL_DIR = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "model_dir"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--mode", choices=["batched", "per-row"], default="batched")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rows", type=int, default=5, help="rows to time in per-row mode")
    parser.add_argument("--save", help="write the probabilities of class 1 here (.npy)")
    args = parser.parse_args()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    estimator = bench_dnn_estimator(str(MODEL_DIR))

    start = time.perf_counter()
    frame = pd.read_csv(args.csv, dtype={"cat": str, "tok": str})
    if args.mode == "per-row":
        frame = frame.head(args.rows)
    features = {k: frame[k].to_numpy() for k in frame.columns if k != "id"}
    probs = []
    if args.mode == "batched":

        def input_fn() -> tf.data.Dataset:
            ds = tf.data.Dataset.from_tensor_slices(features)
            return ds.batch(args.batch_size).prefetch(tf.data.AUTOTUNE)

        for pred in estimator.predict(input_fn, yield_single_examples=False):
            probs.append(pred["probabilities"][:, 1])
    else:
        for i in range(len(frame)):
            row = {k: v[i : i + 1] for k, v in features.items()}
            out = next(estimator.predict(lambda row=row: tf.data.Dataset.from_tensors(row)))
            probs.append(out["probabilities"][1:2])
    seconds = time.perf_counter() - start
    rows = len(frame)
    if args.save:
        np.save(args.save, np.concatenate(probs))
    print(json.dumps({"mode": args.mode, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}))


if __name__ == "__main__":
    main()

"""How fast does the fallback path serialize rows to tf.Examples: protobuf objects vs the vectorized encoder?

One run, one machine, the bench_dnn features (f0..f7 float dense [1], cat and tok string var-len) converted
once from the same rows; each contender serializes them, best of --repeat. The two outputs are checked to
parse to the same Examples (every row) before anything is timed.

    python benchmarks/serialize.py [--rows 100000] [--batch-sizes 100000,8192] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from bench_data import bench_rows  # noqa: E402

EXPORT = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "export"


def serialize_with_protobuf_objects(converted: dict[str, Any], features: dict, num_rows: int) -> np.ndarray:
    """The previous implementation: one tf.train.Example object per row, built and serialized in Python."""
    from tensorflow.core.example import example_pb2, feature_pb2

    from tfpredict.features import SparseValue

    def feature(values: np.ndarray, spec: Any) -> Any:
        pb = feature_pb2
        if spec.dtype == "string":
            return pb.Feature(
                bytes_list=pb.BytesList(
                    value=[v if isinstance(v, bytes) else str(v).encode() for v in values]
                )
            )
        if spec.dtype in ("float32", "float64", "float16"):
            return pb.Feature(float_list=pb.FloatList(value=values.astype(np.float32).tolist()))
        return pb.Feature(int64_list=pb.Int64List(value=values.astype(np.int64).tolist()))

    per_row: list[dict[str, Any]] = [{} for _ in range(num_rows)]
    for key, value in converted.items():
        spec = features[key]
        if isinstance(value, SparseValue):
            bounds = np.searchsorted(value.indices[:, 0], np.arange(num_rows + 1))
            for i in range(num_rows):
                if bounds[i + 1] > bounds[i]:
                    per_row[i][key] = feature(value.values[bounds[i] : bounds[i + 1]], spec)
        else:
            flat = value.reshape(num_rows, -1)
            for i in range(num_rows):
                per_row[i][key] = feature(flat[i], spec)
    out = np.empty(num_rows, dtype=object)
    for i, feats in enumerate(per_row):
        out[i] = example_pb2.Example(features=feature_pb2.Features(feature=feats)).SerializeToString()
    return out


def batches(rows: int, batch_size: int) -> tuple[dict, list[tuple[dict, int]]]:
    import pyarrow as pa

    from tfpredict import Predictor
    from tfpredict.features import convert_column

    with Predictor.load(EXPORT, fast_path=False) as predictor:
        schema = predictor.inputs
    table = pa.Table.from_pandas(bench_rows(rows, seed=1), preserve_index=False)
    out = []
    for start in range(0, rows, batch_size):
        part = table.slice(start, batch_size)
        n = part.num_rows
        out.append(({k: convert_column(part.column(k).combine_chunks(), s, n) for k, s in schema.items()}, n))
    return schema, out


def best_rows_per_second(fn: Any, schema: dict, parts: list, repeat: int) -> float:
    rows = sum(n for _, n in parts)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for converted, n in parts:
            fn(converted, schema, n)
        best = min(best, time.perf_counter() - start)
    return rows / best


def check_same(schema: dict, parts: list) -> None:
    from tensorflow.core.example import example_pb2

    from tfpredict.examples import serialize_examples

    for converted, n in parts:
        new = serialize_examples(converted, schema, n)
        old = serialize_with_protobuf_objects(converted, schema, n)
        for a, b in zip(new, old, strict=True):
            if example_pb2.Example.FromString(a) != example_pb2.Example.FromString(b):
                raise SystemExit("the vectorized encoder's Examples differ from the protobuf objects'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-sizes", default="100000,8192")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from tfpredict.examples import serialize_examples

    print(f"bench_dnn features, {args.rows:,} rows, best of {args.repeat}")
    print(f"{'batch size':>10}  {'protobuf objects':>18}  {'vectorized':>14}  {'speed-up':>8}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        schema, parts = batches(args.rows, min(batch_size, args.rows))
        check_same(schema, parts)
        old = best_rows_per_second(serialize_with_protobuf_objects, schema, parts, args.repeat)
        new = best_rows_per_second(serialize_examples, schema, parts, args.repeat)
        print(f"{batch_size:>10,}  {old:>13,.0f} r/s  {new:>10,.0f} r/s  {new / old:>7.1f}x")


if __name__ == "__main__":
    main()

"""How much does the fast path (parsed features fed past the parse op) buy on a given export, over the
tf.Example fallback (rows serialized to tf.Example, then the signature as exported)?

Loads the export twice in one process (fast_path=True / False), checks both give the same outputs, then
times `predict` on the same rows in interleaved rounds and prints the median rows/s of each, the ratio, and
how far apart the rounds were. Made for the real exports whose parse op sits inside a tf.function (TFX
native Keras), where the fast path exists only because the function is inlined at load.

    python benchmarks/fast_path.py EXPORT DATA.csv [--signature NAME] [--rows 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                simd = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores, {simd}"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_rows(path: Path, rows: int, predictor) -> pa.Table:
    types = {k: pa.string() if s.dtype == "string" else pa.float64() for k, s in predictor.inputs.items()}
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    table = table.select([c for c in table.column_names if c in predictor.inputs])
    repeat = -(-rows // table.num_rows)
    return pa.concat_tables([table] * repeat).slice(0, rows).combine_chunks()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("data", type=Path, help="CSV with a header naming the model's features")
    parser.add_argument("--signature")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from tfpredict import Predictor

    fast = Predictor.load(args.export, args.signature)
    slow = Predictor.load(args.export, args.signature, fast_path=False)
    table = load_rows(args.data, args.rows, fast)
    print(f"{args.export} signature {fast.signature!r}: {table.num_rows:,} rows; {cpu_name()}")
    print(f"fast path: {fast.path} ({fast.path_reason_for(fast.signature)})")
    print(f"fallback:  {slow.path}")
    a, b = fast.predict(table), slow.predict(table)
    for key in a:
        if a[key].dtype.kind in "OSU":
            assert (a[key] == b[key]).all(), key
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)
    times: dict[str, list[float]] = {"fast": [], "fallback": []}
    for _ in range(args.rounds):  # interleaved, so drift on a busy machine hits both alike
        for name, predictor in (("fast", fast), ("fallback", slow)):
            start = time.perf_counter()
            predictor.predict(table)
            times[name].append(table.num_rows / (time.perf_counter() - start))
    print(f"\n| path | rows/s (median of {args.rounds}) | rounds min-max | vs fallback |")
    print("|---|---:|---:|---:|")
    base = statistics.median(times["fallback"])
    for name, rates in times.items():
        med = statistics.median(rates)
        print(f"| {name} | {med:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()

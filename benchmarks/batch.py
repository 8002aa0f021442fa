"""Issues 4 and 16: does `tfpredict predict` on a CSV file run as fast as its stages' CPU work allows, in flat
memory, with figures that a noisy 2-core machine reproduces?

One run, one machine, the same CSV rows (bench_dnn: DNNClassifier 256/128/64 over 8 numeric columns, a
vocabulary column and a hash-bucket embedding column). The headline is measured inside this process, so that
TensorFlow's start-up (several seconds, and the noisiest part of a whole process) is not in it:
  - steady state: `predict_files` on an already loaded Predictor, the CSV of N rows warm in the page cache,
    Parquet output (reader, converter, two model threads and the writer overlapped, as the CLI runs them),
  - the CPU-work limit: the same stages measured alone, one after another in one thread on the same file
    (read the CSV, `Predictor.convert`, `predict_feeds`, write Parquet), limit = 1 / (sum over the stages of
    seconds per row); the pipeline reaches it when the overlap costs nothing, exceeds it where stages
    leave cores idle,
  - the model alone: the `predict_feeds` stage of that pass.
Both run in --rounds interleaved rounds; each figure is the median over the rounds, "spread" says how far
apart they were ((max - min) / median) and ratios are taken within a round. Context, one run each: whole
`tfpredict predict` processes on N and N/5 rows (rows/s, peak RSS, and the "marginal" rate between the two,
which subtracts two start-ups), Estimator.predict batched (512) + prefetched in the TF 2.15 venv, its
probabilities checked against ours (1e-5).

    python benchmarks/batch.py [--rows 1000000] [--rounds 5] [--workdir /tmp/bench] [--venv /work/venv215]
                               [--batch-sizes 4096,8192,16384] [--no-estimator] [--no-cli]
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
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from bench_data import bench_rows, cpu_model, spread  # noqa: E402

EXPORT = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "export"
STAGES = ("read", "convert", "model", "write")


def write_csv(path: Path, n: int) -> None:
    frame = bench_rows(n, seed=1)
    frame.insert(0, "id", np.arange(n))
    frame.to_csv(path, index=False)


# Peak RSS is read by a small launcher process: a child forked straight from this (large) benchmark process
# would report this process's RSS at fork time as its own peak (Linux keeps the high-water mark across exec).
_LAUNCHER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def run_cli(csv: Path, out: Path) -> tuple[float, int] | str:
    """Wall seconds and peak RSS (bytes) of one whole `tfpredict predict` process, or why it failed."""
    cmd = [sys.executable, "-m", "tfpredict", "predict", str(EXPORT), str(csv), "-o", str(out), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], env=env, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 0:
        return (lines[-2] if len(lines) > 1 else proc.stderr.strip())[-300:]
    return seconds, int(lines[-1]) * 1024


def stages_alone(predictor: Any, csv: Path, out: Path) -> dict[str, float]:
    """Seconds of each stage of predict_files, run one after another in this thread (nothing overlaps)."""
    from tfpredict.engines.common import output_schema
    from tfpredict.io.files import expand_inputs
    from tfpredict.io.readers import read_inputs
    from tfpredict.io.writers import open_writer, output_type, outputs_to_batch

    sig = predictor.signatures[predictor.signature]
    declared = {k: output_type(t.dtype, t.shape) for k, t in sig.outputs.items()}
    chunks = read_inputs(expand_inputs([csv]), predictor.inputs, predictor.batch_size)
    seconds = dict.fromkeys(STAGES, 0.0)
    writer = None
    while True:
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        t1 = time.perf_counter()
        seconds["read"] += t1 - t0
        if chunk is None:
            break
        feeds = predictor.convert(chunk.batch)
        t2 = time.perf_counter()
        outputs = predictor.predict_feeds(feeds)
        t3 = time.perf_counter()
        if writer is None:
            schema = output_schema(list(sig.outputs), declared, outputs, chunk.batch, [])
            writer = open_writer(out, schema)
        writer.write(outputs_to_batch(outputs, schema, chunk.batch))
        seconds["convert"] += t2 - t1
        seconds["model"] += t3 - t2
        seconds["write"] += time.perf_counter() - t3
    t0 = time.perf_counter()
    if writer is not None:
        writer.close()
    seconds["write"] += time.perf_counter() - t0
    return seconds


def run_estimator(venv: Path, csv: Path, save: Path) -> dict | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    cmd = [str(python), str(HERE / "estimator_predict.py"), "--csv", str(csv), "--mode", "batched"]
    out = subprocess.run([*cmd, "--save", str(save)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"Estimator.predict failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_process_rounds(csv: Path, tmp: Path, n: int, rounds: int) -> dict[str, list[float]]:
    """Per round: steady-state rows/s, the CPU-work limit, the model alone, and the seconds of each stage."""
    from tfpredict import Predictor, predict_files

    figures: dict[str, list[float]] = {k: [] for k in ("steady", "limit", "model")}
    figures.update({f"{stage} s": [] for stage in STAGES})
    with Predictor.load(EXPORT) as predictor:
        predict_files(predictor, csv, tmp / "warm.parquet")  # warm: page cache, session, allocator
        for r in range(rounds):
            # who goes first alternates, so a slow spell of the machine does not always hit the same one
            for which in ("steady", "alone") if r % 2 == 0 else ("alone", "steady"):
                if which == "steady":
                    result = predict_files(predictor, csv, tmp / "steady.parquet")
                    assert result.rows == n
                    figures["steady"].append(n / result.seconds)
                else:
                    seconds = stages_alone(predictor, csv, tmp / "alone.parquet")
                    for stage in STAGES:
                        figures[f"{stage} s"].append(seconds[stage])
                    figures["limit"].append(n / sum(seconds.values()))
                    figures["model"].append(n / seconds["model"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved in-process rounds (medians)")
    parser.add_argument("--venv", type=Path, default=Path("/work/venv215"), help="TF 2.15 + estimator venv")
    parser.add_argument("--batch-sizes", default="", help="also compare these batch sizes (in one process)")
    parser.add_argument("--no-estimator", action="store_true")
    parser.add_argument("--no-cli", action="store_true", help="skip the whole-process context runs")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the CSVs here (reused when present)")
    args = parser.parse_args()

    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="tfpredict-batch-"))
    tmp.mkdir(parents=True, exist_ok=True)
    n, small = args.rows, args.rows // 5
    csv_n, csv_small = tmp / f"rows_{n}.csv", tmp / f"rows_{small}.csv"
    for path, rows in ((csv_n, n), (csv_small, small)):
        if not path.exists():
            write_csv(path, rows)

    figures = in_process_rounds(csv_n, tmp, n, args.rounds)
    cli = {}
    if not args.no_cli:
        cli = {
            "small": run_cli(csv_small, tmp / "out_small.parquet"),
            "n": run_cli(csv_n, tmp / "out_n.parquet"),
        }
    est = None
    if not args.no_estimator:
        est = run_estimator(args.venv, csv_n, tmp / "estimator.npy")
        if est:
            import pyarrow.parquet as pq

            ours = pq.read_table(tmp / "steady.parquet", columns=["probabilities"]).column("probabilities")
            ours_p1 = np.asarray(ours.to_pylist(), dtype=np.float64)[:, 1]
            np.testing.assert_allclose(ours_p1, np.load(tmp / "estimator.npy"), rtol=1e-5, atol=1e-5)
    report(args, n, small, figures, cli, est)
    if args.batch_sizes:
        compare_batch_sizes(args, csv_n, csv_small, tmp)


def report(args: argparse.Namespace, n: int, small: int, figures: dict, cli: dict, est: dict | None) -> None:
    import tensorflow as tf

    med = {k: statistics.median(v) for k, v in figures.items()}
    ratios = [s / lim for s, lim in zip(figures["steady"], figures["limit"], strict=True)]
    ratio = statistics.median(ratios)
    print("\nbench_dnn (DNNClassifier 256/128/64; 8 numeric, vocabulary, hash-bucket embedding), CSV input")
    print(
        f"{cpu_model()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}; N = {n:,} rows, "
        f"N/5 = {small:,}; in-process figures: median of {args.rounds} interleaved rounds; output "
        + (
            "checked equal to Estimator.predict (1e-5)\n"
            if est
            else "not checked (Estimator.predict not run)\n"
        )
    )
    per_row = {s: med[f"{s} s"] / n * 1e6 for s in STAGES}
    print(f"| {'in one process, N rows (headline)':<56} | {'rows/s':>10} | {'spread':>7} | {'/ limit':>8} |")
    print(f"|{'-' * 58}|{'-' * 12}|{'-' * 9}|{'-' * 10}|")
    rows = [
        ("steady state: predict_files, loaded Predictor, warm file", "steady"),
        ("CPU-work limit: 1 / sum of the stages alone (s/row)", "limit"),
        ("model alone: predict_feeds on converted batches", "model"),
    ]
    for label, key in rows:
        print(
            f"| {label:<56} | {med[key]:>10,.0f} | {spread(figures[key]):>7.0%} | "
            f"{med[key] / med['limit']:>7.2f}x |"
        )
    stages = ", ".join(f"{s} {per_row[s]:.2f}" for s in STAGES)
    print(f"\nstages alone, microseconds per row (medians): {stages}")
    print(
        f"steady state / CPU-work limit, per round: median {ratio:.3f} "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f})"
    )

    ok = {k: v for k, v in cli.items() if isinstance(v, tuple)}
    if ok or est:
        print(f"\n| {'context, one run each':<56} | {'rows/s':>10} | {'seconds':>9} | {'peak RSS':>9} |")
        print(f"|{'-' * 58}|{'-' * 12}|{'-' * 11}|{'-' * 11}|")
    for key, rows_in, label in (("small", small, "N/5"), ("n", n, "N")):
        if key in ok:
            secs, rss = ok[key]
            name = f"tfpredict predict, whole process, {label} rows"
            print(f"| {name:<56} | {rows_in / secs:>10,.0f} | {secs:>7.2f} s | {rss / 2**20:>6,.0f} MB |")
    if len(ok) == 2:
        extra = ok["n"][0] - ok["small"][0]
        marginal = (n - small) / extra if extra > 0 else float("nan")
        name = "tfpredict predict, marginal (N - N/5; two start-ups)"
        print(f"| {name:<56} | {marginal:>10,.0f} | {extra:>7.2f} s | {'':>9} |")
    for key, value in cli.items():
        if not isinstance(value, tuple):
            print(f"  (whole process on {'N/5' if key == 'small' else 'N'} rows failed: {value})")
    if est:
        name = "Estimator.predict, batched 512 + prefetch (TF 2.15)"
        print(f"| {name:<56} | {est['rows_per_s']:>10,.0f} | {est['seconds']:>7.2f} s | {'':>9} |")

    print("\ntargets:")
    checks = [(f"steady state >= 0.9x the CPU-work limit: {ratio:.3f}x", ratio >= 0.9)]
    if est:  # context: the Estimator ran at another moment, under whatever load the machine had then
        print(f"  (steady state / Estimator batched: {med['steady'] / est['rows_per_s']:.1f}x, one run each)")
    if len(ok) == 2:
        grown = ok["n"][1] - ok["small"][1]
        checks.append((f"peak RSS at N within 150 MB of N/5: {grown / 2**20:+,.0f} MB", grown <= 150 * 2**20))
    for name, passed in checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")


def compare_batch_sizes(args: argparse.Namespace, csv_n: Path, csv_small: Path, tmp: Path) -> None:
    """predict_files in one process by batch size, sizes interleaved round by round, median of each."""
    from tfpredict import Predictor, predict_files

    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    rates: dict[int, list[float]] = {bs: [] for bs in sizes}
    with Predictor.load(EXPORT) as predictor:
        predict_files(predictor, csv_small, tmp / "warm.parquet")
        for _ in range(args.rounds):
            for bs in sizes:
                rates[bs].append(
                    predict_files(predictor, csv_n, tmp / "bs.parquet", batch_size=bs).rows_per_second
                )
    print(f"\npredict_files on N rows in one process, by batch size (median of {args.rounds} rounds):")
    for bs in sizes:
        rate = statistics.median(rates[bs])
        print(f"  batch size {bs:>6}: {rate:>10,.0f} rows/s (spread {spread(rates[bs]):.0%})")


if __name__ == "__main__":
    main()

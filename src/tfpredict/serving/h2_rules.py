"""RFC 9113's rules for frames a server receives, as one function the connection calls per frame: what
h2spec checks beyond the happy path (frame sizes and stream ids per type, priority self-dependency, the
SETTINGS values a client may send). Stream-state rules (idle, half-closed, closed) need the connection's
streams and live in grpc_http2.py."""

from __future__ import annotations

from .grpc_wire import (
    ACK,
    GOAWAY,
    HEADERS,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    H2Error,
)

ENABLE_PUSH = 0x2
FLOOD_KIND = {  # frame type -> its flood-limit bucket (h2_flood.py)
    RST_STREAM: "rst_stream",
    SETTINGS: "settings",
    PING: "ping",
    WINDOW_UPDATE: "window_update",
    PRIORITY: "priority",
}


def check_frame(ftype: int, flags: int, stream_id: int, payload: bytes, last_stream: int) -> int | None:
    """Raise H2Error for a connection error; return an error code for a stream error (the stream is then
    reset); None when the frame is fine."""
    if ftype == PRIORITY:
        if stream_id == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            return ErrorCode.FRAME_SIZE_ERROR
        if int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id:
            return ErrorCode.PROTOCOL_ERROR  # a stream cannot depend on itself
    elif ftype == HEADERS:
        if stream_id % 2 == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, f"HEADERS on even stream {stream_id}")
        if flags & PRIORITY_FLAG:
            start = payload[0] + 1 if flags & 0x8 and payload else 0
            if int.from_bytes(payload[start : start + 4], "big") & 0x7FFFFFFF == stream_id:
                return ErrorCode.PROTOCOL_ERROR
    elif ftype == RST_STREAM:
        if stream_id == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM payload must be 4 bytes")
        if stream_id > last_stream:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
    elif ftype == SETTINGS:
        if flags & ACK and payload:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
        for i in range(0, len(payload) - len(payload) % 6, 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            if key == ENABLE_PUSH and int.from_bytes(payload[i + 2 : i + 6], "big") > 1:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
    elif ftype in (PING, GOAWAY) and stream_id != 0:
        raise H2Error(ErrorCode.PROTOCOL_ERROR, "PING and GOAWAY belong to stream 0")
    elif ftype == WINDOW_UPDATE and stream_id:
        if stream_id > last_stream:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
        if len(payload) == 4 and int.from_bytes(payload, "big") & 0x7FFFFFFF == 0:
            return ErrorCode.PROTOCOL_ERROR
    return None

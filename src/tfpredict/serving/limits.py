"""The front ends' limits and timeouts as named values (as hypercorn's Config holds them): one place to read
what a client may send, and to make each a flag. The size limit of a request (--max_request_bytes) is
given to each server on its own: both front ends share it."""

from __future__ import annotations

import resource
from dataclasses import dataclass

FD_RESERVE = 64  # fds kept free for the other port, model files, logs


@dataclass(frozen=True)
class Http1Limits:
    """The REST server (http1.py, rest.py)."""

    max_header_bytes: int = 64 * 1024  # request line and headers; beyond it 431
    max_headers: int = 100  # header fields per request; beyond it 431
    header_timeout_seconds: float = 10.0  # from a request's first byte to the end of its headers; then 408
    body_timeout_seconds: float = 60.0  # from the end of the headers to the end of the body; then 408
    idle_timeout_seconds: float = 60.0  # a keep-alive connection with no request under way is closed
    max_connections: int = 0  # open connections at once; 0: from the fd limit (see connection_cap)
    timer_interval_seconds: float = 0.5  # how often deadlines are checked (one sweep, no timer per request)
    decode_in_thread_bytes: int = 1 << 20  # JSON bodies larger than this are parsed off the event loop
    answers_per_turn: int = 8  # pipelined requests of one connection answered at once (cached, status)
    # in one turn of the event loop; the rest on the next turns, so that one read of them is not a stall
    backlog: int = 1024  # listen() queue
    drain_poll_seconds: float = 0.01  # how often stop() looks whether in-flight requests are done


@dataclass(frozen=True)
class Http2Limits:
    """The HTTP/2 gRPC server (grpc_http2.py)."""

    max_frame_size: int = 1 << 20  # SETTINGS_MAX_FRAME_SIZE we accept: fewer frames for large tensors
    max_header_list: int = 65536  # SETTINGS_MAX_HEADER_LIST_SIZE; a header block may be twice this
    max_concurrent_streams: int = 1024  # SETTINGS_MAX_CONCURRENT_STREAMS; more are refused
    calls_per_connection: int = 128  # calls of one connection running at once; its others wait their turn
    calls_per_turn: int = 32  # calls of one connection started per turn of the event loop
    window_refill: int = 1 << 30  # top a receive window up once this much of it is used
    reset_memory: int = 4096  # streams remembered as ended by us: frames still in flight are not errors
    header_cache_entries: int = 256  # decoded request header blocks remembered per connection
    goaway_message_bytes: int = 200  # debug data sent with a GOAWAY
    frames_per_turn: int = 256  # frames of one connection handled per turn of the event loop
    preface_timeout_seconds: float = 10.0  # a connection that has not sent the client preface is closed
    max_connections: int = 0  # open connections at once; 0: from the fd limit (see connection_cap)
    timer_interval_seconds: float = 0.5  # how often the preface deadline and the memory budget are checked
    backlog: int = 1024  # listen() queue
    drain_poll_seconds: float = 0.01  # how often stop() looks whether open calls are done


def connection_cap(configured: int) -> int:
    """Open connections allowed at once: the configured cap, else half the fds left under the soft limit
    (the gRPC port gets the other half), so accept() never runs out of fds."""
    if configured > 0:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, (soft - FD_RESERVE) // 2)

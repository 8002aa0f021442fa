"""A small HTTP/1.1 server on asyncio for the REST API: keep-alive, pipelining, chunked bodies,
100-continue, size limits (Http1Limits). A body larger than the limit is refused with 413 from its
Content-Length alone, before it is read. What a request means is the handler's business (rest.py).

As strict as RFC 9112 and llhttp where leniency lets a request be read two ways (smuggling behind a proxy):
a request with both Content-Length and Transfer-Encoding, several Content-Lengths, a length or chunk size
that is not plain digits, a Transfer-Encoding other than `chunked`, obs-fold or whitespace before a colon,
bare-LF line ends, or a version other than HTTP/1.0 and 1.1 gets 400 and the connection is closed. Slow
clients are timed out (headers, body, idle keep-alive: one sweep over the connections, no timer per
request), open connections are capped below the fd limit, and a client that does not read its answers stops
being read (no answer is built faster than it is taken).

Against libraries (benchmarks/frontends.py, same trivial handler, h2load, 16 connections; Intel Xeon 2 cores
AVX-512, shared): ours 12,631 requests/s, on h11 3,581 (0.28x), on httptools/llhttp 28,571 (2.26x). By that
figure the request head should be parsed by httptools with this module's limits kept around it (not done yet).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from . import json_codec
from .limits import Http1Limits, connection_cap
from .logs import limit_asyncio_logs
from .memory import MemoryBudget, shed_slow_readers
from .status import as_serving_error

# RFC 9112: a Content-Length is 1*DIGIT and a chunk size 1*HEXDIG (then optional ";ext"). Python's int()
# also takes a sign, "_" and spaces: a chunk size of "-10" used to loop the event loop forever.
CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods and header names
REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/1\.([01])")
log = logging.getLogger(__name__)
REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
JSON = b"application/json"

# (method, path, body) -> (HTTP status, body, content type)
Handler = Callable[[str, str, bytes], Awaitable[tuple[int, bytes, bytes]]]


class BadRequest(Exception):
    """A request head that RFC 9112 does not allow: answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_head(head: str, max_headers: int) -> tuple[str, str, bool, int | None, bool, dict[str, str]]:
    """(method, path, keep-alive, content length, chunked, headers) of a request head, strictly."""
    lines = head.split("\r\n")
    match = REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise BadRequest(400, f"Malformed request line: {lines[0][:100]!r}")
    method, target, minor = match.groups()
    if len(lines) - 1 > max_headers:
        raise BadRequest(431, f"More than {max_headers} header fields")
    headers: dict[str, str] = {}
    lengths = 0
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not TOKEN.fullmatch(name):  # obs-fold, "Name :", no colon, a bad character
            raise BadRequest(400, f"Malformed header line: {line[:100]!r}")
        key = name.lower()
        value = value.strip(" \t")
        if key == "content-length":
            lengths += 1
        if key in headers and key in ("content-length", "transfer-encoding", "host"):
            raise BadRequest(400, f"Header {name!r} given more than once")
        headers[key] = value
    te = headers.get("transfer-encoding")
    if te is not None:
        if te.lower() != "chunked" or minor == "0":
            raise BadRequest(400, f"Unsupported Transfer-Encoding {te[:50]!r} (only 'chunked', in HTTP/1.1)")
        if lengths:
            raise BadRequest(400, "Both Content-Length and Transfer-Encoding given")
    length: int | None = 0
    if "content-length" in headers:
        if not CONTENT_LENGTH.fullmatch(headers["content-length"].encode("latin-1")):
            raise BadRequest(400, "Invalid Content-Length")
        length = int(headers["content-length"])
    conn = headers.get("connection", "").lower()
    keep_alive = conn != "close" if minor == "1" else conn == "keep-alive"
    return method.upper(), target.split("?", 1)[0], keep_alive, length, te is not None, headers


class HttpServer:
    """A minimal HTTP/1.1 server (keep-alive, pipelining, chunked bodies, 100-continue, size limits)."""

    def __init__(
        self,
        handle: Handler,
        max_request_bytes: int,
        limits: Http1Limits | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.handle = handle
        self.max_request_bytes = max_request_bytes
        self.limits = limits or Http1Limits()
        self.budget = budget or MemoryBudget()
        self.connections: dict[HttpConnection, None] = {}  # in the order they were opened
        self.tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.inflight = 0
        self.max_connections = connection_cap(self.limits.max_connections)
        self.refused = 0  # connections closed at once because max_connections were open and busy
        self.evicted = 0  # idle or stalled connections closed to make room for a new one
        self.timed_out = 0
        self.extra_headers = ""  # header lines ("Name: value\r\n") on every answer (CORS: rest.py)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, ssl: object = None) -> None:
        """Listen on host:port; `ssl`: an ssl.SSLContext for HTTPS (serving/tls.py), or None."""
        loop = asyncio.get_running_loop()
        limit_asyncio_logs()
        self._server = await loop.create_server(
            lambda: HttpConnection(self),
            host,
            port,
            reuse_address=True,
            backlog=self.limits.backlog,
            ssl=ssl,  # type: ignore[call-overload]
        )
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close connections past their deadline (headers, body or idle): one pass per interval."""
        while True:
            await asyncio.sleep(self.limits.timer_interval_seconds)
            now = time.monotonic()
            for c in [c for c in self.connections if c.deadline < now]:
                c.time_out()
            shed_slow_readers(self.budget, self.connections)

    def make_room(self) -> bool:
        """At the connection cap: close the oldest connection with no request being answered (idle, or
        stalled in its headers or body: what slowloris holds), as nginx reuses keep-alive connections.
        False when every open connection has a request under way."""
        for c in self.connections:
            if not c.busy:
                self.evicted += 1
                c.drop()
                self.connections.pop(c, None)
                return True
        return False

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace` seconds), close the connections."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + grace
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(self.limits.drain_poll_seconds)
        for c in list(self.connections):
            c.close()


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.head: tuple[str, str, bool, int | None, bool] | None = (
            None  # method, path, keep-alive, length, chunked
        )
        self.closing = False
        self.write_paused = False
        self.reading_paused = False
        self.scanned = 0  # bytes of buf already checked for a bare LF
        self.deadline = time.monotonic() + self.limits.idle_timeout_seconds
        self.loop = asyncio.get_running_loop()  # once: the call makes a syscall (getpid)
        self.account = server.budget.account()
        self.taken = 0  # bytes of the current request taken from buf (held until it is answered)
        self._chunks: list[bytes] = []  # a chunked body's chunks so far
        self._chunk_total = 0
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.connections) >= self.server.max_connections and not self.server.make_room():
            self.server.refused += 1
            self.closing = True
            self._write(503, json_codec.encode_error("Too many open connections"), JSON, keep_alive=False)
            transport.close()
            return
        self.server.connections[self] = None
        transport.set_write_buffer_limits(high=1 << 20)  # type: ignore[attr-defined]

    def pause_writing(self) -> None:  # the client is not reading: stop reading its requests
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            if self.buf and not self.busy:
                self._process()
            self._flow()

    def _flow(self) -> None:
        """Read from the client only while its answers are being taken and at most one request's worth
        (size limit + headers) is buffered: pipelined requests are not read faster than they are served."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        full = len(self.buf) > self.server.max_request_bytes + self.limits.max_header_bytes
        if self.write_paused or full:
            if not self.reading_paused:
                self.reading_paused = True
                transport.pause_reading()
        elif self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def time_out(self) -> None:
        """Past the deadline: 408 for a request under way, a plain close for an idle connection."""
        self.server.timed_out += 1
        self.deadline = float("inf")
        if self.busy or self.transport is None:
            return
        if self.head is not None or self.buf:
            self._reject(408, "Request not received in time")
        else:
            self.closing = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.pop(self, None)
        self.closing = True
        self.buf.clear()
        self._chunks = []
        self.account.close()
        if self.task is not None:  # the client went away: its call is dropped, or cancelled where it waits
            self.task.cancel()

    def backlog_bytes(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def drop(self) -> None:
        """Close a client that does not read its answers (the memory budget is overrun)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.busy:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.buf and self.head is None and not self.busy:  # the first byte of a request
            self.deadline = time.monotonic() + self.limits.header_timeout_seconds
        if not self.account.grow_request(len(data)):
            self._reject(503, "The server's memory for buffered requests is full (--memory_budget_bytes)")
            return
        self.buf += data
        if not self.busy and not self.write_paused:
            self._process()
        self._flow()

    def _process(self) -> None:
        while not self.busy and not self.closing and not self.write_paused:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if self._bare_lf(len(self.buf) if end < 0 else end + 4):
                    self._reject(400, "Bare LF line end (lines end with CRLF)")
                    return
                if end < 0:
                    if len(self.buf) > self.limits.max_header_bytes:
                        self._reject(431, "Request header fields too large")
                    return
                head = bytes(self.buf[:end]).decode("latin-1")
                self._consume(end + 4)
                self.scanned = 0
                if not self._parse_head(head):
                    return
                self.deadline = time.monotonic() + self.limits.body_timeout_seconds
            method, path, keep_alive, length, chunked = self.head  # type: ignore[misc]
            if chunked:
                body = self._chunked_body()
                if body is None:
                    return
            else:
                assert length is not None
                if len(self.buf) < length:
                    return
                body = bytes(self.buf[:length])
                self._consume(length)
            self.head = None
            self.busy = True
            self.deadline = float("inf")  # the handler's time is not the client's
            self.server.inflight += 1
            held, self.taken = self.taken, 0
            task = self.task = self.loop.create_task(self._respond(method, path, body, keep_alive, held))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.taken += n

    def _bare_lf(self, stop: int) -> bool:
        """Is there an LF not preceded by CR in buf[:stop]? Scans each byte once (slow senders included)."""
        i = self.buf.find(b"\n", self.scanned, stop)
        while i >= 0:
            if i == 0 or self.buf[i - 1] != 13:
                return True
            i = self.buf.find(b"\n", i + 1, stop)
        self.scanned = max(self.scanned, stop - 1)
        return False

    def _parse_head(self, head: str) -> bool:
        try:
            method, path, keep_alive, length, chunked, headers = parse_head(head, self.limits.max_headers)
        except BadRequest as e:
            self._reject(e.status, e.message)
            return False
        limit = self.server.max_request_bytes
        if length is not None and length > limit:
            self._reject(
                413,
                f"Request body of {length} bytes exceeds the limit of {limit} bytes (--max_request_bytes)",
            )
            return False
        self.head = (method, path, keep_alive, length, chunked)
        if headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        self._chunk_total = 0
        self._chunks = []
        return True

    def _chunked_body(self) -> bytes | None:
        limit = self.server.max_request_bytes
        while True:
            end = self.buf.find(b"\r\n")
            if end < 0:
                return None
            match = CHUNK_SIZE.fullmatch(bytes(self.buf[:end]))
            if match is None:
                self._reject(400, "Malformed chunked encoding: invalid chunk size")
                return None
            size = int(match.group(1), 16)
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", end)
                if self.buf[end : end + 4] == b"\r\n\r\n":
                    self._consume(end + 4)
                elif trailer_end >= 0:
                    self._consume(trailer_end + 4)
                else:
                    return None
                body = b"".join(self._chunks)
                self._chunks = []
                return body
            if self._chunk_total + size > limit:
                self._reject(413, f"Request body exceeds the limit of {limit} bytes (--max_request_bytes)")
                return None
            if len(self.buf) < end + 2 + size + 2:
                return None
            self._chunks.append(bytes(self.buf[end + 2 : end + 2 + size]))
            self._chunk_total += size
            self._consume(end + 2 + size + 2)

    def _reject(self, status: int, message: str) -> None:
        """Answer an unreadable request and close: the rest of its body is never read."""
        self._write(status, json_codec.encode_error(message), JSON, keep_alive=False)
        self.closing = True
        self.buf.clear()
        self.transport.close()  # type: ignore[union-attr]

    def _write(self, status: int, body: bytes, content_type: bytes, keep_alive: bool) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type.decode()}\r\nContent-Length: {len(body)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n")
            + self.server.extra_headers
            + "\r\n"
        )
        self.transport.write(head.encode() + body)  # type: ignore[union-attr]

    async def _respond(self, method: str, path: str, body: bytes, keep_alive: bool, held: int) -> None:
        try:
            try:
                status, out, ctype = await self.server.handle(method, path, body)
            except Exception as exc:  # a bug of ours: still an answer, never a dropped connection
                err = as_serving_error(exc)
                status, out, ctype = err.http_status, json_codec.encode_error(err.message), JSON
            if self.transport is None or self.transport.is_closing():
                return
            keep = keep_alive and not self.closing
            self._write(status, out, ctype, keep)
            if not keep:
                self.transport.close()
        finally:
            self.server.inflight -= 1
            self.busy = False
            self.task = None
            self.account.shrink_request(held)
            self.deadline = time.monotonic() + (
                self.limits.header_timeout_seconds if self.buf else self.limits.idle_timeout_seconds
            )
        if self.transport is not None and not self.transport.is_closing() and not self.write_paused:
            if self.buf:
                self._process()
            self._flow()


__all__ = ["HttpServer"]

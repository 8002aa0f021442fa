"""A small HTTP/1.1 server on asyncio for the REST API: keep-alive, pipelining, chunked bodies,
100-continue, size limits (Http1Limits). A body larger than the limit is refused with 413 from its
Content-Length alone, before it is read. What a request means is the handler's business (rest.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from . import json_codec
from .limits import Http1Limits
from .status import as_serving_error

# RFC 9112: a Content-Length is 1*DIGIT and a chunk size 1*HEXDIG (then optional ";ext"). Python's int()
# also takes a sign, "_" and spaces: a chunk size of "-10" used to loop the event loop forever.
CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
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


class HttpServer:
    """A minimal HTTP/1.1 server (keep-alive, pipelining, chunked bodies, 100-continue, size limits)."""

    def __init__(self, handle: Handler, max_request_bytes: int, limits: Http1Limits | None = None) -> None:
        self.handle = handle
        self.max_request_bytes = max_request_bytes
        self.limits = limits or Http1Limits()
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.inflight = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_address=True, backlog=self.limits.backlog
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace` seconds), close the connections."""
        if self._server is not None:
            self._server.close()
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
        self.loop = asyncio.get_running_loop()  # once: the call makes a syscall (getpid)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.busy:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()
        elif len(self.buf) > self.server.max_request_bytes + self.limits.max_header_bytes:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _process(self) -> None:
        while not self.busy and not self.closing:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > self.limits.max_header_bytes:
                        self._reject(431, "Request header fields too large")
                    return
                head = bytes(self.buf[:end]).decode("latin-1")
                del self.buf[: end + 4]
                if not self._parse_head(head):
                    return
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
                del self.buf[:length]
            self.head = None
            self.busy = True
            self.server.inflight += 1
            task = self.loop.create_task(self._respond(method, path, body, keep_alive))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)

    def _parse_head(self, head: str) -> bool:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._reject(400, f"Malformed request line: {lines[0][:100]!r}")
            return False
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        conn = headers.get("connection", "").lower()
        keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length: int | None = 0
        if not chunked and "content-length" in headers:
            if not CONTENT_LENGTH.fullmatch(headers["content-length"].encode("latin-1")):
                self._reject(400, "Invalid Content-Length")
                return False
            length = int(headers["content-length"])
            limit = self.server.max_request_bytes
            if length > limit:
                self._reject(
                    413,
                    f"Request body of {length} bytes exceeds the limit of {limit} "
                    "bytes (--max_request_bytes)",
                )
                return False
        path = target.split("?", 1)[0]
        self.head = (method.upper(), path, keep_alive, length, chunked)
        if headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        self._chunk_total = 0
        self._chunks: list[bytes] = []
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
                    del self.buf[: end + 4]
                elif trailer_end >= 0:
                    del self.buf[: trailer_end + 4]
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
            del self.buf[: end + 2 + size + 2]

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
            + "\r\n"
        )
        self.transport.write(head.encode() + body)  # type: ignore[union-attr]

    async def _respond(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
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
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            if self.buf:
                self._process()


__all__ = ["HttpServer"]

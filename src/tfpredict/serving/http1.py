"""The HTTP/1.1 server on asyncio for the REST API: keep-alive, pipelining, chunked bodies, 100-continue,
size limits (Http1Limits). Requests are parsed by llhttp (httptools, uvicorn's parser); this module keeps what
a parser does not know around it. What a request means is the handler's business (rest.py).

llhttp is as strict as RFC 9112 where leniency lets a request be read two ways (smuggling behind a proxy):
both Content-Length and Transfer-Encoding, several Content-Lengths, a length or chunk size that is not plain
digits, obs-fold, whitespace before a colon, bare-LF line ends all end the parse; on top of it a
Transfer-Encoding other than exactly `chunked` (or in HTTP/1.0), a second Host or Transfer-Encoding, or a
version other than HTTP/1.0 and 1.1 is refused. Each gets 400 (431 for heads past the limits, 413 for a
body past --max_request_bytes, decided from Content-Length before the body is read) and the connection is
closed, after the answers owed to the requests before it. Slow clients are timed out (headers, body, idle
keep-alive: one sweep over the connections, no timer per request), open connections are capped below the fd
limit, request bytes are charged to the server's memory budget, and a client that does not read its answers
stops being read (no answer is built faster than it is taken, no more than one read of pipelined requests
is parsed ahead). A handler may answer at once (rest.py: a cached body, a status) or give an awaitable (a
prediction): only the latter costs a Task, and at most answers_per_turn of one connection's pipelined
requests are answered in one turn of the event loop.

Why llhttp (benchmarks/frontends.py, same trivial handler, h2load, 16 connections, AMD EPYC 2 cores AVX-512):
this server on llhttp 30,404 requests/s, the same with our former hand-written parser 30,862 (same speed, the
strictness now a well-kept library's), a server on h11 10,616 (0.35x), a bare httptools server with none of
the limits above 43,912 (1.44x).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NoReturn

import httptools

from . import json_codec
from .limits import Http1Limits, connection_cap
from .logs import limit_asyncio_logs
from .memory import MemoryBudget, shed_slow_readers
from .status import as_serving_error

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
MEMORY_FULL = "The server's memory for buffered requests is full (--memory_budget_bytes)"
# What a parsed request waiting in a connection's queue costs beyond its bytes (objects, strings): charged
# to the memory budget, so that a read of tiny pipelined requests cannot expand without bound.
QUEUED_REQUEST_BYTES = 256

# (method, path, body) -> (HTTP status, body, content type), at once or to await
Reply = tuple[int, bytes, bytes]
Handler = Callable[[str, str, bytes], Reply | Awaitable[Reply]]


class BadRequest(Exception):
    """A request that RFC 9112 does not allow: answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One request as the parser hands it over: what the handler needs, and the bytes it holds."""

    __slots__ = ("method", "path", "keep_alive", "body")

    def __init__(self, method: str, path: str, keep_alive: bool, body: bytes) -> None:
        self.method = method
        self.path = path
        self.keep_alive = keep_alive
        self.body = body


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
        """At the connection cap: close the oldest connection stalled in a request's headers or body (what
        slowloris holds), else the oldest idle one, as nginx reuses keep-alive connections; never one with
        a request being answered. An idle client's next request may already be on its way, so it goes
        last. False when every open connection has a request under way."""
        chosen = None
        for c in self.connections:
            if c.busy or c.process_scheduled:  # answering, or mid-way through its pipelined requests
                continue
            if c.in_message:  # stalled: the first such is the oldest
                chosen = c
                break
            chosen = chosen or c  # the oldest idle one, if no connection is stalled
        if chosen is None:
            return False
        self.evicted += 1
        chosen.drop()
        self.connections.pop(chosen, None)
        return True

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
    """One client: its bytes go through llhttp (httptools); the requests it completes wait in `queue` and are
    answered one at a time, in order. The parser's callbacks (on_*) apply this module's limits as it goes."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | BadRequest] = deque()  # parsed, behind the one being answered
        self.busy = False
        self.closing = False
        self.ignoring = False  # past an upgrade or a refused request: what the client sends is not read
        self.write_paused = False
        self.reading_paused = False
        self.deadline = time.monotonic() + self.limits.idle_timeout_seconds
        self.loop = asyncio.get_running_loop()  # once: the call makes a syscall (getpid)
        self.account = server.budget.account()
        self.held = 0  # request bytes received and charged to the account, released once answered
        self.task: asyncio.Task[None] | None = None
        self.continue_owed = False  # a "100 Continue" to send once the answers before it are written
        self.error: BadRequest | None = None  # why a callback stopped the parser
        self.begun = 0  # requests begun on this connection
        self.process_scheduled = False  # answers_per_turn were given: the queue's rest on the next turn
        self._reset_message()
        self.in_message = False  # between requests

    def _reset_message(self) -> None:
        self.in_message = self.in_head = True
        self.head_bytes = 0  # bytes received while in the head (for a head that never ends)
        self.head_size = 0  # request line and headers as parsed
        self.url = b""
        self.headers = 0
        self.length: int | None = None
        self.te: bytes | None = None
        self.host = False
        self.expect = False
        self.body: list[bytes] = []
        self.body_bytes = 0

    # -- llhttp callbacks: one request as it is parsed ------------------------------------------------------

    def _fail(self, status: int, message: str) -> NoReturn:
        self.error = BadRequest(status, message)
        raise self.error

    def on_message_begin(self) -> None:
        self.begun += 1
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        self.head_size += len(name) + len(value) + 4
        if self.headers > self.limits.max_headers:
            self._fail(431, f"More than {self.limits.max_headers} header fields")
        key = name.lower()
        if key == b"content-length":  # llhttp has checked it is digits, given once
            self.length = int(value)
        elif key == b"transfer-encoding":
            if self.te is not None:
                self._fail(400, "Header 'Transfer-Encoding' given more than once")
            self.te = value
        elif key == b"host":
            if self.host:
                self._fail(400, "Header 'Host' given more than once")
            self.host = True
        elif key == b"expect":
            self.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_size > self.limits.max_header_bytes:
            self._fail(431, "Request header fields too large")
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._fail(400, f"Unsupported HTTP version {version!r} (HTTP/1.0 and HTTP/1.1 only)")
        if self.te is not None and (self.te.lower() != b"chunked" or version == "1.0"):
            self._fail(400, f"Unsupported Transfer-Encoding {self.te[:50]!r} (only 'chunked', in HTTP/1.1)")
        limit = self.server.max_request_bytes
        if self.length is not None and self.length > limit:
            too_big = f"Request body of {self.length} bytes exceeds the limit of {limit} bytes"
            self._fail(413, too_big + " (--max_request_bytes)")
        self.deadline = time.monotonic() + self.limits.body_timeout_seconds
        if self.expect:
            if self.busy or self.queue:  # not before the answers still owed
                self.continue_owed = True
            else:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.server.max_request_bytes:
            limit = self.server.max_request_bytes
            self._fail(413, f"Request body exceeds the limit of {limit} bytes (--max_request_bytes)")
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if not self.account.grow_request(QUEUED_REQUEST_BYTES):
            self._fail(503, MEMORY_FULL)
        self.held += QUEUED_REQUEST_BYTES
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        method = self.parser.get_method().decode("ascii")
        self.queue.append(Request(method, path, self.parser.should_keep_alive(), body))
        self.in_message = False
        self.body = []

    # -- the transport -----------------------------------------------------------------------------------

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

    def data_received(self, data: bytes) -> None:
        if self.closing or self.ignoring:
            return
        if not self.in_message and not self.busy and not self.queue:  # the first byte of a request
            self.deadline = time.monotonic() + self.limits.header_timeout_seconds
        if not self.account.grow_request(len(data)):
            self._refuse(BadRequest(503, MEMORY_FULL))
            return
        self.held += len(data)
        # A head still open after a read that did not start a message is all head bytes (a head that never
        # ends: 431); one that began within the read is counted from the next read on.
        counting, begun = self.in_head and self.in_message, self.begun
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade (h2c, websocket) or CONNECT: we do not switch protocols, so that request is answered
            # over HTTP/1.1 and the connection closed after it; what follows it is not read.
            if self.queue and isinstance(self.queue[-1], Request):
                self.queue[-1].keep_alive = False
            self.ignoring = True
        except httptools.HttpParserError as exc:
            self._refuse(self.error or BadRequest(400, f"Malformed request: {exc}"))
        if self.in_head and counting and self.begun == begun and not self.ignoring:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self._refuse(BadRequest(431, "Request header fields too large"))
        if self.closing:
            return
        if not self.busy and not self.write_paused:
            self._process()
        self._flow()

    def pause_writing(self) -> None:  # the client is not reading: stop reading its requests
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            if not self.busy:
                self._process()
            self._flow()

    def _flow(self) -> None:
        """Read from the client only while its answers are being taken and no parsed request waits behind
        the one being answered: pipelined requests are not read faster than they are served."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.write_paused or self.queue or self.ignoring:
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
        if self.in_message:
            self._reject(408, "Request not received in time")
        else:
            self.closing = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.pop(self, None)
        self.closing = True
        self.queue.clear()
        self.body = []
        self.account.close()
        self.held = 0
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

    # -- answering, in order ------------------------------------------------------------------------------

    def _refuse(self, error: BadRequest) -> None:
        """A request that cannot be read: answered now, or after the answers still owed (in order)."""
        self.ignoring = True
        if self.busy or self.queue:
            self.queue.append(error)
        else:
            self._reject(error.status, error.message)

    def _process(self) -> None:
        self.process_scheduled = False
        budget = self.limits.answers_per_turn
        while self.queue and not self.busy and not self.closing and not self.write_paused:
            if budget == 0:  # the rest on the next turn: other connections go between
                self.process_scheduled = True
                self.loop.call_soon(self._process_later)
                return
            budget -= 1
            item = self.queue.popleft()
            if isinstance(item, BadRequest):
                self._reject(item.status, item.message)
                return
            try:
                reply = self.server.handle(item.method, item.path, item.body)
            except Exception as exc:  # a bug of ours: still an answer, never a dropped connection
                reply = _error_reply(exc)
            if isinstance(reply, tuple):  # answered at once (a cached answer, a status): no Task
                self._answer(item, reply)
                self._after_answer()
                continue
            self.busy = True
            self.deadline = float("inf")  # the handler's time is not the client's
            self.server.inflight += 1
            task = self.task = self.loop.create_task(self._respond(item, reply))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)

    def _process_later(self) -> None:
        if self.process_scheduled and not self.busy:
            self._process()
            self._flow()

    def _release(self) -> None:
        """Give back the request bytes no request still needs: everything but the one being received."""
        if self.queue:
            return
        keep = self.head_size + self.body_bytes if self.in_message else 0
        freed = max(0, self.held - keep)
        self.held -= freed
        self.account.shrink_request(freed)

    def _reject(self, status: int, message: str) -> None:
        """Answer an unreadable request and close: the rest of its body is never read."""
        self._write(status, json_codec.encode_error(message), JSON, keep_alive=False)
        self.closing = True
        self.queue.clear()
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

    async def _respond(self, request: Request, reply: Awaitable[Reply]) -> None:
        try:
            try:
                answer = await reply
            except Exception as exc:  # a bug of ours: still an answer, never a dropped connection
                answer = _error_reply(exc)
            self._answer(request, answer)
        finally:
            self.server.inflight -= 1
            self.busy = False
            self.task = None
        if self._after_answer():
            self._process()
            self._flow()

    def _answer(self, request: Request, reply: Reply) -> None:
        """Write one answer (unless the client went away); close after it when the request asked."""
        if self.transport is None or self.transport.is_closing():
            return
        keep = request.keep_alive and not self.closing
        self._write(*reply, keep)
        if not keep:
            self.closing = True
            self.transport.close()

    def _after_answer(self) -> bool:
        """Free the answered request's bytes and set the next deadline; True when the connection goes on."""
        self._release()
        if self.in_message:
            timeout = self.limits.header_timeout_seconds if self.in_head else self.limits.body_timeout_seconds
            self.deadline = time.monotonic() + timeout
        else:
            self.deadline = time.monotonic() + self.limits.idle_timeout_seconds
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if self.continue_owed and not self.queue:
            self.continue_owed = False
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return not self.write_paused


def _error_reply(exc: Exception) -> Reply:
    err = as_serving_error(exc)
    return err.http_status, json_codec.encode_error(err.message), JSON


__all__ = ["HttpServer", "Reply"]

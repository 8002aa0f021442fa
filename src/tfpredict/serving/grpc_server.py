"""The listening side of the HTTP/2 gRPC front end: sockets, the connection cap (the oldest connection
without a call makes room), one sweep per interval (preface deadline, memory budget), graceful stop."""

from __future__ import annotations

import asyncio
import time

from .grpc_api import Method
from .grpc_http2 import Http2Connection
from .limits import Http2Limits, connection_cap
from .memory import MemoryBudget, shed_slow_readers


class GrpcServer:
    """Listens on TCP and/or UNIX sockets; `stop` sends GOAWAY, lets open calls finish, then closes."""

    def __init__(
        self,
        methods: dict[str, Method],
        max_message_bytes: int,
        limits: Http2Limits | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.methods = methods
        self.max_message_bytes = max_message_bytes
        self.limits = limits or Http2Limits()
        self.budget = budget or MemoryBudget()
        self.connections: dict[Http2Connection, None] = {}  # in the order they were opened
        self.max_connections = connection_cap(self.limits.max_connections)
        self.refused = 0  # connections closed at once because max_connections were open and busy
        self.evicted = 0  # connections without a call closed to make room for a new one
        self._servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.Task[None] | None = None

    def make_room(self) -> bool:
        """At the connection cap: close the oldest connection with no call open (GOAWAY first: a client
        reconnects when it needs to). False when every open connection has calls under way."""
        for c in self.connections:
            if not c.streams:
                self.evicted += 1
                c.goaway()
                c.close()
                self.connections.pop(c, None)
                return True
        return False

    def _start_sweeping(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Once per interval: close connections that sent no preface in time, shed slow readers."""
        while True:
            await asyncio.sleep(self.limits.timer_interval_seconds)
            late = time.monotonic() - self.limits.preface_timeout_seconds
            for c in [c for c in self.connections if not c.preface_seen and c.opened < late]:
                c.drop()
            shed_slow_readers(self.budget, self.connections)

    async def listen(self, host: str, port: int, ssl: object = None) -> None:
        """Listen on host:port; `ssl`: an ssl.SSLContext with ALPN h2 (serving/tls.py), or None."""
        loop = asyncio.get_running_loop()
        self._servers.append(
            await loop.create_server(
                lambda: Http2Connection(self),
                host,
                port,
                backlog=self.limits.backlog,
                ssl=ssl,  # type: ignore[call-overload]
            )
        )
        self._start_sweeping()

    async def listen_unix(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_unix_server(lambda: Http2Connection(self), path))
        self._start_sweeping()

    async def start(self) -> None:
        """Listening starts with listen(); here for the same calls as the grpcio front end."""

    async def stop(self, grace: float) -> None:
        for s in self._servers:
            s.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for c in list(self.connections):
            c.goaway()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.streams for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(self.limits.drain_poll_seconds)
        for c in list(self.connections):
            c.close()
        for s in self._servers:
            await s.wait_closed()

"""The gRPC API on grpcio's own server (`--grpc_frontend=grpcio`): the reference implementation, kept for
clients or options (grpcio channel arguments) the default HTTP/2 front end does not cover."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .grpc_api import Method
from .status import ServingError


class GrpcioServer:
    """A grpc.aio server answering `methods`, with the same start/stop calls as grpc_http2.GrpcServer."""

    def __init__(
        self,
        methods: dict[str, Method],
        max_message_bytes: int,
        channel_args: list[tuple[str, Any]] | None = None,
        credentials: Any = None,
    ) -> None:
        """`credentials`: grpc.ssl_server_credentials for the TCP port (serving/tls.py), or None."""
        self._credentials = credentials
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
            *(channel_args or []),
        ]
        self._server = grpc.aio.server(options=options)
        services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path, method in methods.items():
            service, name = path[1:].split("/")
            make = (
                grpc.unary_stream_rpc_method_handler
                if method.streaming
                else grpc.unary_unary_rpc_method_handler
            )
            services.setdefault(service, {})[name] = make(
                (_stream_behaviour if method.streaming else _behaviour)(method.handler),
                request_deserializer=method.request_type.FromString,
                response_serializer=_serialize,
            )
        self._server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(s, h) for s, h in services.items())
        )

    async def listen(self, host: str, port: int) -> None:
        address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        if self._credentials is not None:
            bound = self._server.add_secure_port(address, self._credentials)
        else:
            bound = self._server.add_insecure_port(address)
        if not bound:
            raise OSError(f"could not bind {address}")

    async def listen_unix(self, path: str) -> None:
        self._server.add_insecure_port(f"unix:{path}")

    async def start(self) -> None:
        """grpcio takes its ports before it starts: call after listen()/listen_unix()."""
        await self._server.start()

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()  # type: ignore[no-any-return]


def _behaviour(handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def behaviour(request: Any, context: Any) -> Any:
        try:
            return await handler(request)
        except ServingError as err:
            await context.abort(err.grpc_code, err.message)

    return behaviour


def _stream_behaviour(
    handler: Callable[[Any], AsyncIterator[Any]],
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for answer in handler(request):
                yield answer
        except ServingError as err:
            await context.abort(err.grpc_code, err.message)

    return behaviour

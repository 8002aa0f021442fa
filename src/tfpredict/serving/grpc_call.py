"""What runs a gRPC call once its request is complete: parse the message, drive the method's coroutine to
its answer, honour `grpc-timeout`, turn the outcome into a response message or a status.

Transport-free: the connection (grpc_http2.py) hands a stream's body over and gets the answer back through
`CallOwner.send_response` / `send_error`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from .grpc_api import Method
from .grpc_wire import unary_message
from .status import ServingError, as_serving_error


class CallOwner(Protocol):
    """The connection a call answers on (`stream` is its own, opaque here)."""

    loop: asyncio.AbstractEventLoop

    def send_response(self, stream: Any, message: bytes) -> None: ...

    def send_error(self, stream: Any, err: ServingError) -> None: ...

    def send_message(self, stream: Any, message: bytes, first: bool) -> bool: ...

    def end_call(self, stream: Any) -> None: ...

    def call_ended(self, stream: Any) -> None: ...


def start_call(
    owner: CallOwner,
    stream: Any,
    method: Method,
    body: bytearray,
    encoding: bytes,
    deadline: float | None,
    max_message_bytes: int,
) -> GrpcCall | None:
    """Parse the request and run its handler up to its first await; None when the request is answered
    already (a message that does not parse)."""
    try:
        request = method.request_type.FromString(unary_message(body, encoding, max_message_bytes))
    except ServingError as err:
        owner.send_error(stream, err)
        return None
    except DecodeError:
        owner.send_error(stream, ServingError("INTERNAL", "Could not parse the request message"))
        return None
    if method.streaming:
        return StreamCall(owner, stream, method.handler(request), deadline)  # type: ignore[return-value]
    call = GrpcCall(owner, stream, method.handler(request))
    if deadline is not None:
        call.timer = owner.loop.call_at(deadline, call.expire)
    call.step()
    return call


class GrpcCall:
    """Drives one call's handler coroutine without an asyncio.Task: the first step runs at once (not a
    loop turn later), the next ones when the future it awaits is done. A Task per call (creation, its
    context copy, scheduling) was a tenth of a batched call's time on the event loop."""

    __slots__ = ("owner", "stream", "coro", "waiting", "done", "cancelling", "timer", "expired")

    def __init__(self, owner: CallOwner, stream: Any, coro: Coroutine[Any, Any, Any]) -> None:
        self.owner = owner
        self.stream = stream
        self.coro = coro
        self.waiting: asyncio.Future[Any] | None = None
        self.done = False
        self.cancelling = False
        self.timer: asyncio.TimerHandle | None = None  # grpc-timeout
        self.expired = False

    def step(self, exc: BaseException | None = None) -> None:
        try:
            yielded = self.coro.send(None) if exc is None else self.coro.throw(exc)
        except StopIteration as stop:
            self.done = True
            self._finish(stop.value, None)
            return
        except BaseException as err:  # noqa: BLE001 - CancelledError included; _finish re-raises others
            self.done = True
            self._finish(None, err)
            return
        if yielded is None:  # a bare yield (asyncio.sleep(0)): run again on the next loop turn
            self.owner.loop.call_soon(self._wakeup, None)
        elif getattr(yielded, "_asyncio_future_blocking", False):  # asyncio's protocol for awaited futures
            yielded._asyncio_future_blocking = False
            self.waiting = yielded
            yielded.add_done_callback(self._wakeup)
        else:
            self.owner.loop.call_soon(self.step, RuntimeError(f"handler yielded {yielded!r}"))

    def _wakeup(self, future: asyncio.Future[Any] | None) -> None:
        self.waiting = None
        if self.cancelling:
            self.cancelling = False
            self.step(asyncio.CancelledError())
        else:
            self.step()  # the await resumes: it returns the future's result or raises its exception

    def _finish(self, response: Any, exc: BaseException | None) -> None:
        """The handler returned `response` or raised `exc`: answer the stream."""
        if self.timer is not None:
            self.timer.cancel()
        try:
            self._answer(response, exc)
        finally:
            self.owner.call_ended(self.stream)

    def _answer(self, response: Any, exc: BaseException | None) -> None:
        if exc is None:
            self.owner.send_response(self.stream, response.SerializeToString())
        elif isinstance(exc, asyncio.CancelledError):
            if self.expired:
                self.owner.send_error(self.stream, ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded"))
            # otherwise the client reset the stream or went away: nobody to answer
        elif isinstance(exc, Exception):
            self.owner.send_error(self.stream, as_serving_error(exc))
        else:
            raise exc

    def expire(self) -> None:
        """grpc-timeout passed: the handler is cancelled, the client gets DEADLINE_EXCEEDED."""
        if not self.done:
            self.expired = True
            self.cancel()

    def cancel(self) -> None:
        """Like Task.cancel: the handler gets CancelledError where it waits."""
        if self.timer is not None:
            self.timer.cancel()
        if self.done:
            return
        if self.waiting is not None and self.waiting.cancel():
            return  # its done callback resumes the handler, whose await raises CancelledError
        self.cancelling = True


class StreamCall:
    """A server-streaming call (grpc.health.v1.Health/Watch): an asyncio Task sends each answer of the
    handler's async iterator as it comes, then OK trailers; `cancel` (the client reset the stream, the
    deadline passed) stops it. Such calls are rare and long-lived: a Task each is no cost."""

    __slots__ = ("owner", "stream", "task", "timer", "sent")

    def __init__(self, owner: CallOwner, stream: Any, answers: Any, deadline: float | None) -> None:
        self.owner = owner
        self.stream = stream
        self.sent = False
        self.task = owner.loop.create_task(self._run(answers))
        self.timer = owner.loop.call_at(deadline, self.cancel) if deadline is not None else None

    async def _run(self, answers: Any) -> None:
        try:
            async for answer in answers:
                # a client that does not read gets no more answers, never a growing buffer
                if self.owner.send_message(self.stream, answer.SerializeToString(), not self.sent):
                    self.sent = True
        except asyncio.CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - the client hears of it as a status
            if not self.sent:
                self.owner.send_error(self.stream, as_serving_error(exc))
                return
        finally:
            if self.timer is not None:
                self.timer.cancel()
            await answers.aclose()
        self.owner.end_call(self.stream)

    def cancel(self) -> None:
        self.task.cancel()

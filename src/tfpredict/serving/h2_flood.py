"""Flood limits for the HTTP/2 front end: frames that cost the server work but carry no request.

A client may send SETTINGS, PING, WINDOW_UPDATE, PRIORITY, RST_STREAM and empty frames as fast as its link
allows; each costs a reply or a walk over state. Like nghttp2's and grpc-core's mitigations (rapid reset is
CVE-2023-44487), each kind has a token bucket per connection: a burst, then a sustained rate; past it the
connection is closed with GOAWAY ENHANCE_YOUR_CALM. The rates are far above what gRPC clients send (a few
PINGs per second for keepalive and BDP probing). WINDOW_UPDATEs are what a client owes for the DATA it
receives (grpcio sends one for the stream and one for the connection per answer, so a busy client sends
tens of thousands a second): every DATA frame we send earns the client two more (`earn`), and only
updates beyond those count against the rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class FloodLimits:
    """(burst, per second) for each kind of frame."""

    rst_stream: tuple[int, float] = (5000, 1000.0)  # rapid reset; room for clients cancelling under overload
    settings: tuple[int, float] = (100, 20.0)
    ping: tuple[int, float] = (1000, 100.0)
    window_update: tuple[int, float] = (2000, 1000.0)  # beyond the two each DATA frame we send earns
    priority: tuple[int, float] = (1000, 200.0)
    empty: tuple[int, float] = (1000, 200.0)  # DATA / HEADERS / CONTINUATION with no payload, not ending
    max_table_size_updates: int = 2  # HPACK: at most two at the start of a header block (RFC 7541 4.2)


class TokenBucket:
    __slots__ = ("burst", "rate", "tokens", "stamp")

    def __init__(self, burst: int, rate: float) -> None:
        self.burst, self.rate = float(burst), rate
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty (the client is flooding)."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def earn(self, n: float) -> None:
        """Add `n` tokens (up to the burst): frames the client is owed by what we sent it."""
        self.tokens = min(self.burst, self.tokens + n)


WINDOW_UPDATES_PER_DATA = 2  # the stream's and the connection's


class FloodGuard:
    """One connection's buckets: `allow(kind)` is False once that kind of frame floods."""

    def __init__(self, limits: FloodLimits | None = None) -> None:
        self.limits = limits or FloodLimits()
        self.buckets = {
            kind: TokenBucket(*getattr(self.limits, kind))
            for kind in ("rst_stream", "settings", "ping", "window_update", "priority", "empty")
        }

    def allow(self, kind: str) -> bool:
        return self.buckets[kind].take()

    def sent_data(self) -> None:
        """A DATA frame went to the client: it may answer it with WINDOW_UPDATEs."""
        self.buckets["window_update"].earn(WINDOW_UPDATES_PER_DATA)


def table_size_updates(block: bytes, stop_after: int = 2) -> int:
    """How many HPACK dynamic table size updates (001xxxxx, a 5-bit prefix integer) open a header block,
    counted up to one more than `stop_after` (a block of a million of them costs no more than three)."""
    count, i, n = 0, 0, len(block)
    while i < n and block[i] & 0xE0 == 0x20 and count <= stop_after:
        count += 1
        i += 1
        if block[i - 1] & 0x1F == 0x1F:  # the integer continues in bytes with the high bit set
            while i < n and block[i] & 0x80:
                i += 1
            i += 1
    return count

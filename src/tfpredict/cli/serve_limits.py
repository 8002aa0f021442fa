"""`tfpredict serve`'s flags for what a client may make the server hold or wait for: timeouts, connection
and stream caps, the memory budget. TF Serving has none of these as flags (its servers hard-code them),
so the names are tfpredict's own; each maps onto one field of Http1Limits / Http2Limits (serving/limits.py)
or ServeOptions.memory_budget_bytes."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..serving.limits import Http1Limits, Http2Limits
from ..serving.memory import DEFAULT_BUDGET_BYTES

_H1 = Http1Limits()
_H2 = Http2Limits()

# flag -> (field of the limits class, help)
REST_FLAGS: dict[str, tuple[str, str]] = {
    "rest_header_timeout_seconds": ("header_timeout_seconds", "time to receive a request's headers (408)"),
    "rest_body_timeout_seconds": ("body_timeout_seconds", "time to receive a request's body (408)"),
    "rest_idle_timeout_seconds": ("idle_timeout_seconds", "an idle keep-alive connection is closed after it"),
    "rest_max_header_bytes": ("max_header_bytes", "largest request line + headers (431)"),
    "rest_max_headers": ("max_headers", "most header fields in a request (431)"),
    "rest_max_connections": ("max_connections", "open REST connections at once, 503 past it (0: ulimit -n)"),
}
GRPC_FLAGS: dict[str, tuple[str, str]] = {
    "grpc_preface_timeout_seconds": ("preface_timeout_seconds", "time for a new connection's HTTP/2 preface"),
    "grpc_max_concurrent_streams": ("max_concurrent_streams", "streams per HTTP/2 connection (advertised)"),
    "grpc_max_calls_per_connection": (
        "calls_per_connection",
        "calls of one HTTP/2 connection running at once; its other complete requests wait their turn",
    ),
    "grpc_max_connections": ("max_connections", "open gRPC connections at once (0: from ulimit -n)"),
}


def add_limit_options(p: argparse.ArgumentParser) -> None:
    """The limit flags, each defaulting to its field's value."""
    g = p.add_argument_group("limits (what one client may make the server hold or wait for)")
    for flags, defaults in ((REST_FLAGS, _H1), (GRPC_FLAGS, _H2)):
        for flag, (name, text) in flags.items():
            value = getattr(defaults, name)
            g.add_argument(f"--{flag}", type=type(value), default=value, help=f"{text} (default {value})")
    g.add_argument(
        "--memory_budget_bytes",
        type=int,
        default=DEFAULT_BUDGET_BYTES,
        help="buffered request bytes and unread answers across all clients; past it new requests get "
        "503 / RESOURCE_EXHAUSTED and clients that do not read are dropped (0: no budget; "
        f"default {DEFAULT_BUDGET_BYTES})",
    )


def limits_from(args: argparse.Namespace) -> dict[str, Any]:
    """ServeOptions fields from the parsed limit flags."""
    rest = {name: getattr(args, flag) for flag, (name, _) in REST_FLAGS.items()}
    grpc = {name: getattr(args, flag) for flag, (name, _) in GRPC_FLAGS.items()}
    return {
        "http1_limits": dataclasses.replace(_H1, **rest),
        "http2_limits": dataclasses.replace(_H2, **grpc),
        "memory_budget_bytes": args.memory_budget_bytes,
    }

"""`tfpredict serve`: the flags of tensorflow_model_server, so existing launch scripts keep working.

One flag per ServeOptions field, same name, default taken from the field: the options are built from the
parsed flags by field name, and a flag and its field cannot disagree. TF Serving's own flags (all of 2.20's,
implemented or ignored) are in serve_flags.py; here are tfpredict's own."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from ..serving.config import ServeOptions
from .options import comma_list
from .serve_flags import add_field_option, add_tf_serving_flags, ignored_flags, version_text
from .serve_limits import add_limit_options, limits_from

log = logging.getLogger("tfpredict.serve")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve models over TF Serving's REST and gRPC APIs",
        description="A drop-in for tensorflow_model_server: same flags, same REST JSON and gRPC protos.",
        allow_abbrev=False,  # as TF Serving: --model_base is not --model_base_path
    )

    def add(name: str, **kwargs: Any) -> None:
        add_field_option(p, name, **kwargs)

    add("host", help="address to bind (default all interfaces, as TF Serving)")
    add(
        "batching_process",
        help="run batched model calls in a child process per version (more requests/s, 2x model memory)",
    )
    add(
        "grpc_frontend",
        choices=("http2", "grpcio"),
        help="gRPC server: tfpredict's own HTTP/2 one (fast, the default) or grpcio's",
    )
    add(
        "event_loop",
        choices=("asyncio", "uvloop"),
        help="asyncio's own event loop, or uvloop (pip install 'tfpredict[uvloop]'), ~15%% faster",
    )
    add(
        "max_request_bytes",
        type=int,
        help="largest request body (REST 413 / gRPC RESOURCE_EXHAUSTED above it)",
    )
    add("drain_seconds", type=float, help="how long SIGTERM waits for in-flight requests")
    add(
        "response_cache_bytes",
        type=int,
        help="cache answers to repeated requests, LRU, up to this many bytes (0: off); per model with "
        "--response_cache_models",
    )
    add(
        "response_cache_models",
        type=comma_list,
        metavar="MODEL[,MODEL...]",
        help="only these models use the response cache (default: every model)",
    )
    add(
        "request_log_max_file_bytes",
        type=int,
        help="start a new request log file (logging_config in the model config) past this size",
    )
    add_limit_options(p)
    add_tf_serving_flags(p)
    p.set_defaults(run=run)


def options_from(args: argparse.Namespace) -> ServeOptions:
    """ServeOptions from the parsed flags, field by field name (the limits from their own flags)."""
    limits = limits_from(args)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions) if f.name not in limits}
    return ServeOptions(**fields, **limits)


def run(args: argparse.Namespace) -> int:
    from ..serving.server import configure_logging, serve

    if args.version:
        print(version_text())
        return 0
    configure_logging(logging.DEBUG if args.debug else logging.INFO)
    ignored = ignored_flags(args)  # a refused value stops here, before anything loads
    if ignored:
        log.info("Ignored (no meaning in tfpredict): %s", " ".join(ignored))
    return serve(options_from(args))

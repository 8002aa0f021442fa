"""`tfpredict serve`: the flags of tensorflow_model_server, so existing launch scripts keep working.

One flag per ServeOptions field, same name, default taken from the field: the options are built from the
parsed flags by field name, and a flag and its field cannot disagree."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from ..serving.config import ServeOptions
from .options import comma_list
from .serve_limits import add_limit_options, limits_from

_DEFAULTS = ServeOptions()


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _channel_args(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve models over TF Serving's REST and gRPC APIs",
        description="A drop-in for tensorflow_model_server: same flags, same REST JSON and gRPC protos.",
    )

    def add(name: str, **kwargs: Any) -> None:
        p.add_argument(f"--{name}", default=getattr(_DEFAULTS, name), **kwargs)

    flag: dict[str, Any] = {"nargs": "?", "const": True, "type": _bool}  # --x, --x=true, --x=false
    add("port", type=int, help="gRPC port (0: no gRPC server)")
    add("rest_api_port", type=int, help="REST port (default 0: no REST server, as TF Serving)")
    add("host", help="address to bind (default all interfaces, as TF Serving)")
    add("model_name", help="name of the model served with --model_base_path")
    add("model_base_path", help="directory of numeric version directories")
    add("model_config_file", help="text-format ModelServerConfig (model_config_list)")
    add("model_config_file_poll_wait_seconds", type=float, help="re-read the config file (0: never)")
    add("file_system_poll_wait_seconds", type=float, help="look for new versions (0: never)")
    add("enable_batching", help="merge concurrent requests into one model call", **flag)
    add("batching_parameters_file", help="text-format BatchingParameters")
    add(
        "batching_process",
        help="run batched model calls in a child process per version (more requests/s, 2x model memory)",
        **flag,
    )
    add("monitoring_config_file", help="text-format MonitoringConfig (prometheus_config)")
    add("enable_model_warmup", help="replay assets.extra/tf_serving_warmup_requests", **flag)
    add("rest_api_num_threads", type=int, help="worker threads for unbatched requests")
    add("rest_api_timeout_in_ms", type=int, help="REST requests past it get 504 (0: no limit)")
    add("tensorflow_intra_op_parallelism", type=int)
    add("tensorflow_inter_op_parallelism", type=int)
    add(
        "saved_model_tags",
        type=comma_list,
        metavar="TAG[,TAG...]",
        help="the meta graph's tag set, comma-separated (default: the serving one, e.g. serve)",
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
        "grpc_channel_arguments",
        type=_channel_args,
        help="comma-separated key=value grpcio server arguments (with --grpc_frontend=grpcio)",
    )
    add("grpc_socket_path", help="also serve gRPC on this UNIX domain socket")
    add(
        "max_request_bytes",
        type=int,
        help="largest request body (REST 413 / gRPC RESOURCE_EXHAUSTED above it)",
    )
    add("drain_seconds", type=float, help="how long SIGTERM waits for in-flight requests")
    add(
        "ssl_config_file",
        help="text-format SSLConfig (server_key, server_cert, custom_ca, client_verify): TLS on the gRPC "
        "port, as TF Serving, and on the REST port (tfpredict's extension)",
    )
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
    add_limit_options(p)
    p.set_defaults(run=run)


def options_from(args: argparse.Namespace) -> ServeOptions:
    """ServeOptions from the parsed flags, field by field name (the limits from their own flags)."""
    limits = limits_from(args)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions) if f.name not in limits}
    return ServeOptions(**fields, **limits)


def run(args: argparse.Namespace) -> int:
    from ..serving.server import configure_logging, serve

    configure_logging(logging.DEBUG if args.debug else logging.INFO)
    return serve(options_from(args))

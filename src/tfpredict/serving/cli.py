"""`tfpredict serve`: the flags of tensorflow_model_server, so existing launch scripts keep working."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import UsageError
from .config import DEFAULT_MAX_REQUEST_BYTES


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_serve_arguments(p: argparse.ArgumentParser, debug: bool = True) -> None:
    add = p.add_argument
    add("--port", type=int, default=8500, help="gRPC port (0: no gRPC server)")
    add("--rest_api_port", type=int, default=8501, help="REST port (0: no REST server)")
    add("--host", default="0.0.0.0", help="address to bind (default all interfaces, as TF Serving)")
    add("--model_name", default="default", help="name of the model served with --model_base_path")
    add("--model_base_path", default="", help="directory of numeric version directories")
    add("--model_config_file", default="", help="text-format ModelServerConfig (model_config_list)")
    add(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0,
        help="re-read the config file (0: never)",
    )
    add("--file_system_poll_wait_seconds", type=float, default=1, help="look for new versions (0: never)")
    flag: dict[str, Any] = {"nargs": "?", "const": True, "type": _bool}
    add("--enable_batching", default=False, help="merge concurrent requests into one model call", **flag)
    add("--batching_parameters_file", default="", help="text-format BatchingParameters")
    add(
        "--batching_process",
        default=False,
        help="run batched model calls in a child process per version (more requests/s, 2x model memory)",
        **flag,
    )
    add("--monitoring_config_file", default="", help="text-format MonitoringConfig (prometheus_config)")
    add("--enable_model_warmup", default=True, help="replay assets.extra/tf_serving_warmup_requests", **flag)
    add("--rest_api_num_threads", type=int, default=16, help="worker threads for unbatched requests")
    add(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="REST requests past it get 504 (0: no limit)",
    )
    add("--tensorflow_intra_op_parallelism", type=int, default=0)
    add("--tensorflow_inter_op_parallelism", type=int, default=0)
    add(
        "--grpc_frontend",
        choices=("http2", "grpcio"),
        default="http2",
        help="gRPC server: tfpredict's own HTTP/2 one (fast, the default) or grpcio's",
    )
    add(
        "--event_loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="asyncio's own event loop, or uvloop (pip install 'tfpredict[uvloop]'), ~15%% faster",
    )
    add(
        "--grpc_channel_arguments",
        default="",
        help="comma-separated key=value grpcio server arguments (with --grpc_frontend=grpcio)",
    )
    add("--grpc_socket_path", default="", help="also serve gRPC on this UNIX domain socket")
    add(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body (REST 413 / gRPC RESOURCE_EXHAUSTED above it)",
    )
    add("--drain_seconds", type=float, default=5.0, help="how long SIGTERM waits for in-flight requests")
    if debug:  # `tfpredict --debug serve` has it already
        add("--debug", action="store_true", help="show tracebacks and debug logs")


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="serve models over TF Serving's REST and gRPC APIs",
        description="A drop-in for tensorflow_model_server: same flags, same REST JSON and gRPC protos.",
    )
    add_serve_arguments(p, debug=False)
    p.set_defaults(run=run_serve)
    return p


def _channel_args(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


def run_serve(args: argparse.Namespace) -> int:
    from .server import ServeOptions, configure_logging, serve

    configure_logging(logging.DEBUG if getattr(args, "debug", False) else logging.INFO)
    options = ServeOptions(
        port=args.port,
        rest_api_port=args.rest_api_port,
        host=args.host,
        model_name=args.model_name,
        model_base_path=args.model_base_path,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file,
        monitoring_config_file=args.monitoring_config_file,
        enable_model_warmup=args.enable_model_warmup,
        rest_api_num_threads=args.rest_api_num_threads,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        grpc_socket_path=args.grpc_socket_path,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        max_request_bytes=args.max_request_bytes,
        drain_seconds=args.drain_seconds,
        grpc_channel_arguments=_channel_args(args.grpc_channel_arguments),
        grpc_frontend=args.grpc_frontend,
        event_loop=args.event_loop,
        batching_process=args.batching_process,
    )
    return serve(options)


def main(argv: list[str] | None = None) -> int:
    """`python -m tfpredict.serving ...`: the serve command on its own."""
    parser = argparse.ArgumentParser(prog="tfpredict serve")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_serve(args)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"tfpredict serve: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code

"""Every flag of tensorflow_model_server 2.20 (tensorflow_serving/model_servers/main.cc), and what each means
here: implemented (a ServeOptions field of the same name, same default), or accepted and ignored (one start-up
line names the ones given), with the values tfpredict refuses (where ignoring would be wrong: ALTS
credentials, a platform config). `--version` prints the versions and exits.

`add_field_option` is the hook for other flag modules (cli/serve_limits.py and the like): a flag that maps
onto the ServeOptions field of its name, defaulting to the field's default."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..serving.config import ServeOptions
from .options import comma_list

IMPLEMENTED, IGNORED = "implemented", "ignored"
_DEFAULTS = ServeOptions()


def parse_bool(text: str) -> bool:
    """TF Serving's bool flags: --x, --x=true, --x=false (and 1/0, yes/no, on/off)."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_channel_args(text: str) -> list[tuple[str, Any]]:
    """--grpc_channel_arguments: comma-separated key=value, integers as integers (as TF Serving)."""
    out: list[tuple[str, Any]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


@dataclass(frozen=True)
class TfServingFlag:
    """One flag of tensorflow_model_server: its type, whether it is implemented here, and what it does."""

    name: str
    type: Callable[[str], Any]
    status: str  # IMPLEMENTED (a ServeOptions field) or IGNORED
    note: str  # what it does here, or why it means nothing here
    default: Any = None  # the default of an ignored flag (an implemented one takes its field's)
    refuse: Callable[[Any], str] | None = None  # a message for a value that must not be ignored

    @property
    def is_bool(self) -> bool:
        return self.type is parse_bool


B, N, F, S = parse_bool, int, float, str  # bool, integer, float, string flags


def _no_alts(value: Any) -> str:
    return "ALTS credentials are not supported: use --ssl_config_file for TLS" if value else ""


def _no_platform_config(value: Any) -> str:
    return (
        "--platform_config_file is not supported: give its parts as --tensorflow_session_config_file, "
        "--batching_parameters_file and --saved_model_tags"
        if value
        else ""
    )


def _flag(name: str, type: Callable[[str], Any], note: str) -> TfServingFlag:
    return TfServingFlag(name, type, IMPLEMENTED, note)


def _ignored(name: str, type: Callable[[str], Any], default: Any, note: str, **kw: Any) -> TfServingFlag:
    return TfServingFlag(name, type, IGNORED, note, default, **kw)


# In main.cc's order.
TF_SERVING_FLAGS: tuple[TfServingFlag, ...] = (
    _flag("port", N, "gRPC port (0: no gRPC server)"),
    _flag("grpc_socket_path", S, "also serve gRPC on this UNIX domain socket"),
    _flag("rest_api_port", N, "REST port (default 0: no REST server, as TF Serving)"),
    _flag("rest_api_num_threads", N, "worker threads for unbatched requests"),
    _flag("rest_api_timeout_in_ms", N, "REST requests past it get 504 (0: no limit)"),
    _flag("rest_api_enable_cors_support", B, "CORS headers on REST answers, OPTIONS preflight answered"),
    _flag("enable_batching", B, "merge concurrent requests into one model call"),
    _flag(
        "allow_version_labels_for_unavailable_models",
        B,
        "a config may point a new label at a version not loaded yet",
    ),
    _flag("batching_parameters_file", S, "text-format BatchingParameters"),
    _flag(
        "enable_per_model_batching_parameters",
        B,
        "batching parameters from each version's batching_params.pbtxt (threads from the common file)",
    ),
    _flag("model_config_file", S, "text-format ModelServerConfig (model_config_list)"),
    _flag("model_config_file_poll_wait_seconds", F, "re-read the config file (0: never)"),
    _flag("model_name", S, "name of the model served with --model_base_path"),
    _flag("model_base_path", S, "directory of numeric version directories"),
    _flag("num_load_threads", N, "models loaded at once (0: one after the other)"),
    _ignored("num_unload_threads", N, 0, "unloading is quick here: versions unload in the poll thread"),
    _flag("max_num_load_retries", N, "retries of a failed load, on the file-system poll (0: none)"),
    _flag("load_retry_interval_micros", N, "time between load retries"),
    _flag("file_system_poll_wait_seconds", F, "look for new versions (0: never)"),
    _ignored("flush_filesystem_caches", B, True, "no file-system caches of TensorFlow's own to flush"),
    _flag("tensorflow_session_parallelism", N, "intra- and inter-op threads of every session (0: auto)"),
    _flag("tensorflow_session_config_file", S, "text-format ConfigProto every session starts from"),
    _flag("tensorflow_intra_op_parallelism", N, "threads inside one op (0: auto)"),
    _flag("tensorflow_inter_op_parallelism", N, "ops run side by side (0: auto)"),
    _ignored("use_alts_credentials", B, False, "no ALTS here (true is refused)", refuse=_no_alts),
    _flag(
        "ssl_config_file",
        S,
        "text-format SSLConfig (server_key, server_cert, custom_ca, client_verify): TLS on the gRPC "
        "port, as TF Serving, and on the REST port (tfpredict's extension)",
    ),
    _ignored(
        "platform_config_file",
        S,
        "",
        "a PlatformConfigMap names C++ source adapters (a value is refused)",
        refuse=_no_platform_config,
    ),
    _ignored("per_process_gpu_memory_fraction", F, 0.0, "CPU only: no GPU memory to reserve"),
    _flag("saved_model_tags", comma_list, "the meta graph's tag set, comma-separated (default: serve)"),
    _flag(
        "grpc_channel_arguments", parse_channel_args, "key=value grpcio arguments (--grpc_frontend=grpcio)"
    ),
    _ignored("grpc_max_threads", N, 0, "gRPC runs on the event loop: no gRPC thread pool to size"),
    _flag("enable_model_warmup", B, "replay assets.extra/tf_serving_warmup_requests at load"),
    _flag("num_request_iterations_for_warmup", N, "replay each warm-up record this many times (0: once)"),
    _flag("monitoring_config_file", S, "text-format MonitoringConfig (prometheus_config)"),
    _ignored(
        "remove_unused_fields_from_bundle_metagraph",
        B,
        True,
        "the MetaGraphDef is not kept after loading anyway",
    ),
    _ignored("prefer_tflite_model", B, False, "no TFLite: the SavedModel is served (TF Serving's fallback)"),
    _ignored("num_tflite_pools", N, 0, "no TFLite interpreters"),
    _ignored("num_tflite_interpreters_per_pool", N, 1, "no TFLite interpreters"),
    _flag(
        "enable_signature_method_name_check",
        B,
        "Classify/Regress/Predict refuse a signature of another method_name",
    ),
    _flag("xla_cpu_compilation_enabled", B, "XLA JIT compilation (auto-clustering) in every session"),
    _flag("xla_gpu_compilation_enabled", B, "XLA on CPU and GPU: on this CPU build, the CPU one"),
    _ignored("enable_profiler", B, True, "no TensorFlow profiler service on the gRPC port"),
    _ignored("thread_pool_factory_config_file", S, "", "no custom inter-op thread pool factories"),
    _ignored("mixed_precision", S, "", "models run in the precision they were exported in"),
    _ignored("skip_initialize_tpu", B, False, "no TPU"),
    _flag("enable_grpc_healthcheck_service", B, "the grpc.health.v1.Health service on the gRPC port"),
    _flag(
        "enable_serialization_as_tensor_content",
        B,
        "gRPC Predict outputs as packed tensor_content bytes instead of typed value lists",
    ),
)
VERSION_FLAG = "version"  # main.cc's --version: print the versions and exit


def add_field_option(p: Any, name: str, **kwargs: Any) -> None:
    """A flag mapping onto the ServeOptions field of its name; bool fields take --x, --x=true, --x=false."""
    default = getattr(_DEFAULTS, name)
    if isinstance(default, bool) and "type" not in kwargs:
        kwargs.update(nargs="?", const=True, type=parse_bool)
    p.add_argument(f"--{name}", default=default, **kwargs)


def add_tf_serving_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of tensorflow_model_server; a flag another module added already (same name) is kept."""
    g = p.add_argument_group("tensorflow_model_server 2.20 flags")
    for f in TF_SERVING_FLAGS:
        kwargs: dict[str, Any] = {"type": f.type, "help": f.note}
        if f.is_bool:
            kwargs.update(nargs="?", const=True)
        if f.type is comma_list:
            kwargs["metavar"] = "TAG[,TAG...]"
        try:
            if f.status == IMPLEMENTED:
                add_field_option(g, f.name, **kwargs)
            else:  # not given: absent from the namespace, so that a given one is named at start-up
                kwargs["help"] = f"ignored: {f.note}"
                g.add_argument(f"--{f.name}", default=argparse.SUPPRESS, **kwargs)
        except argparse.ArgumentError:  # registered by another flag module
            pass
    g.add_argument(
        f"--{VERSION_FLAG}",
        nargs="?",
        const=True,
        default=False,
        type=parse_bool,
        help="print the versions and exit",
    )


def ignored_flags(args: argparse.Namespace) -> list[str]:
    """The ignored flags given on the command line, as --name=value; a refused value is a UsageError."""
    from ..errors import UsageError

    given = []
    for f in TF_SERVING_FLAGS:
        if f.status != IGNORED or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        why = f.refuse(value) if f.refuse is not None else ""
        if why:
            raise UsageError(why)
        given.append(f"--{f.name}={str(value).lower() if isinstance(value, bool) else value}")
    return given


def version_text() -> str:
    """What --version prints: main.cc's two lines, naming tfpredict as the model server."""
    import tensorflow as tf

    from .. import __version__

    return f"TensorFlow ModelServer: tfpredict {__version__}\nTensorFlow Library: {tf.__version__}"

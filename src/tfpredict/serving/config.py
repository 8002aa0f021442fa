"""TF Serving's configuration files: model_config_list, batching parameters, monitoring (text protos)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,  # noqa: F401  (registers google/protobuf/wrappers.proto)
)
from tensorflow_serving.config import model_server_config_pb2

from ..errors import UsageError
from .limits import Http1Limits, Http2Limits
from .memory import DEFAULT_BUDGET_BYTES

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


@dataclass
class ServeOptions:
    """tensorflow_model_server's flags (same names, same defaults), plus tfpredict's own few.

    `tfpredict serve` takes one flag per field, with the field's default (cli/serve.py builds this from
    the parsed flags by field name)."""

    port: int = 8500
    # 0: no REST server, as tensorflow_model_server (its --rest_api_port defaults to 0): a launch script
    # written for TF Serving opens the same ports here and no other. Give --rest_api_port=8501 for REST.
    rest_api_port: int = 0
    host: str = "0.0.0.0"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0
    file_system_poll_wait_seconds: float = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    rest_api_num_threads: int = 16
    rest_api_timeout_in_ms: int = 30000
    grpc_socket_path: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    saved_model_tags: list[str] | None = None  # the meta graph's tag set; None: the serving one
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    drain_seconds: float = 5.0
    grpc_channel_arguments: list[tuple[str, Any]] = field(default_factory=list)
    grpc_frontend: str = "http2"  # "http2": grpc_http2.py; "grpcio": grpcio's own server
    event_loop: str = "asyncio"  # or "uvloop"
    batching_process: bool = False  # batched model calls in a child process per version
    # What a client may make the server hold or wait for (cli/serve_limits.py has their flags).
    http1_limits: Http1Limits = field(default_factory=Http1Limits)
    http2_limits: Http2Limits = field(default_factory=Http2Limits)
    memory_budget_bytes: int = DEFAULT_BUDGET_BYTES
    ssl_config_file: str = ""  # SSLConfig text proto: TLS on gRPC (as TF Serving) and REST (tls.py)
    response_cache_bytes: int = 0  # an LRU cache of answers, bounded in bytes (0: off; response_cache.py)
    response_cache_models: list[str] | None = None  # the models that use it; None: every model
    request_log_max_file_bytes: int = 64 << 20  # a request log file is rotated past this size
    # TF Serving 2.20's other flags that mean something here (cli/serve_flags.py lists every flag).
    rest_api_enable_cors_support: bool = False  # CORS headers + OPTIONS preflight on REST
    enable_per_model_batching_parameters: bool = False  # batching_params.pbtxt in a version directory
    allow_version_labels_for_unavailable_models: bool = False
    num_load_threads: int = 0  # 0: models load one after the other; N: N models at a time
    max_num_load_retries: int = 5  # retries of a failed load, one per load_retry_interval_micros
    load_retry_interval_micros: int = 60_000_000
    tensorflow_session_parallelism: int = 0  # intra- and inter-op threads at once (0: TensorFlow's choice)
    tensorflow_session_config_file: str = ""  # a text-format tensorflow.ConfigProto for every session
    num_request_iterations_for_warmup: int = 0  # each warm-up record is replayed this many times (0: once)
    enable_signature_method_name_check: bool = False  # classify/regress/predict check the method_name
    xla_cpu_compilation_enabled: bool = False  # XLA JIT (auto-clustering) in every session
    xla_gpu_compilation_enabled: bool = False  # XLA on CPU and GPU: here, the same as the CPU one
    enable_grpc_healthcheck_service: bool = False  # grpc.health.v1.Health on the gRPC port
    enable_serialization_as_tensor_content: bool = False  # gRPC Predict outputs in tensor_content

    def model_configs(self) -> list[ModelConfig]:
        if self.model_config_file:
            if self.model_base_path:  # TF Serving: "If used, --model_name, --model_base_path are ignored"
                log.warning("--model_config_file is given: --model_name and --model_base_path are ignored")
            return read_model_config_file(self.model_config_file)
        if not self.model_base_path:
            raise UsageError("Give --model_base_path (with --model_name) or --model_config_file")
        return [ModelConfig(self.model_name, self.model_base_path)]


@dataclass(frozen=True)
class VersionPolicy:
    """Which numeric version directories of a base path are served: latest N, all, or specific ones."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: list[int]) -> list[int]:
        if self.kind == "all":
            return sorted(on_disk)
        if self.kind == "specific":
            return sorted(v for v in on_disk if v in self.versions)
        return sorted(on_disk)[-max(1, self.num_versions) :]


@dataclass(frozen=True)
class ModelConfig:
    """One served model: a name, a base path of numeric version directories, a policy and labels."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)
    platform: str = "tensorflow"
    logging: RequestLogConfig | None = None  # its logging_config, when it samples requests


@dataclass(frozen=True)
class RequestLogConfig:
    """ModelConfig.logging_config: where sampled requests go (request_log.py) and which fraction."""

    filename_prefix: str
    sampling_rate: float
    type: str = "tfrecord"  # LogCollectorConfig.type: "tfrecord" (PredictionLog) or "jsonl"


def request_log_config(c: Any) -> RequestLogConfig | None:
    """A ModelConfig proto's logging_config, checked; None when it samples nothing."""
    if not c.HasField("logging_config"):
        return None
    collector, rate = c.logging_config.log_collector_config, c.logging_config.sampling_config.sampling_rate
    kind = collector.type or ("jsonl" if collector.filename_prefix.endswith(".jsonl") else "tfrecord")
    if kind not in ("tfrecord", "jsonl"):
        raise UsageError(f"Model {c.name!r}: log_collector_config type {kind!r}: give tfrecord or jsonl")
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"Model {c.name!r}: sampling_rate {rate:g} is not between 0 and 1")
    if rate and not collector.filename_prefix:
        raise UsageError(f"Model {c.name!r}: logging_config needs log_collector_config.filename_prefix")
    return RequestLogConfig(collector.filename_prefix, rate, kind) if rate else None


@dataclass(frozen=True)
class BatchingParameters:
    """The fields of TF Serving's BatchingParameters that tfpredict honours (defaults: TF Serving's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 2
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False  # merge inputs of unequal inner sizes, padded to the largest
    enable_large_batch_splitting: bool = False  # a request over max_execution_batch_size is cut in parts
    max_execution_batch_size: int = 0  # the largest batch run at once with splitting (0: max_batch_size)

    @property
    def execution_limit(self) -> int:
        """The most rows one model call gets: max_execution_batch_size when splitting, else max_batch_size."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size


@dataclass(frozen=True)
class MonitoringConfig:
    prometheus_enable: bool = False
    prometheus_path: str = "/monitoring/prometheus/metrics"


# The installed tensorflow-serving-api ships model_server_config but not the batching and monitoring
# protos, so their messages are declared here, field for field, to parse the same text files.
def _message_classes() -> dict[str, type]:
    pool = descriptor_pool.Default()
    name = "tfpredict/serving/tf_serving_extra.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        f = descriptor_pb2.FileDescriptorProto(name=name, package="tensorflow.serving", syntax="proto3")
        f.dependency.append("google/protobuf/wrappers.proto")
        T = descriptor_pb2.FieldDescriptorProto

        def msg(mname: str, fields: list[tuple[str, int, int, str, int]]) -> None:
            m = f.message_type.add(name=mname)
            for fname, number, ftype, type_name, label in fields:
                fd = m.field.add(name=fname, number=number, type=ftype, label=label)
                if type_name:
                    fd.type_name = type_name

        opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
        i64, s, b = (
            ".google.protobuf.Int64Value",
            ".google.protobuf.StringValue",
            ".google.protobuf.BoolValue",
        )
        msg(
            "BatchingParameters",
            [
                ("max_batch_size", 1, T.TYPE_MESSAGE, i64, opt),
                ("batch_timeout_micros", 2, T.TYPE_MESSAGE, i64, opt),
                ("max_enqueued_batches", 3, T.TYPE_MESSAGE, i64, opt),
                ("num_batch_threads", 4, T.TYPE_MESSAGE, i64, opt),
                ("thread_pool_name", 5, T.TYPE_MESSAGE, s, opt),
                ("allowed_batch_sizes", 6, T.TYPE_INT64, "", rep),
                ("pad_variable_length_inputs", 7, T.TYPE_BOOL, "", opt),
                ("enable_large_batch_splitting", 8, T.TYPE_MESSAGE, b, opt),
                ("max_execution_batch_size", 9, T.TYPE_MESSAGE, i64, opt),
            ],
        )
        msg("PrometheusConfig", [("enable", 1, T.TYPE_BOOL, "", opt), ("path", 2, T.TYPE_STRING, "", opt)])
        msg(
            "MonitoringConfig",
            [("prometheus_config", 1, T.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig", opt)],
        )
        pool.Add(f)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
        for n in ("BatchingParameters", "MonitoringConfig")
    }


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"Could not open {what} {path}: {exc.strerror}") from exc


def _parse(text: str, message: object, path: str) -> None:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        full_name = message.DESCRIPTOR.full_name  # type: ignore[attr-defined]
        raise UsageError(f"Error parsing text-format {full_name} in {path}: {exc}") from exc


def parse_model_config_text(text: str, path: str = "<config>") -> list[ModelConfig]:
    """Parse a ModelServerConfig text proto (`model_config_list { config { ... } }`)."""
    proto = model_server_config_pb2.ModelServerConfig()
    _parse(text, proto, path)
    return model_configs_from_proto(proto)


def model_configs_from_proto(proto: model_server_config_pb2.ModelServerConfig) -> list[ModelConfig]:
    if proto.WhichOneof("config") == "custom_model_config":
        raise UsageError("custom_model_config is not supported; use model_config_list")
    configs = []
    names = set()
    for c in proto.model_config_list.config:
        if not c.name or not c.base_path:
            raise UsageError(
                f"Every model config needs a name and a base_path; got {c.name!r} {c.base_path!r}"
            )
        if c.name in names:
            raise UsageError(f"Model {c.name!r} is configured twice")
        names.add(c.name)
        if c.model_platform not in ("", "tensorflow"):
            raise UsageError(
                f"Model {c.name!r}: model_platform {c.model_platform!r} is not supported (tensorflow)"
            )
        p = c.model_version_policy
        which = p.WhichOneof("policy_choice")
        if which == "all":
            policy = VersionPolicy("all")
        elif which == "specific":
            policy = VersionPolicy("specific", versions=tuple(p.specific.versions))
        else:
            policy = VersionPolicy("latest", num_versions=p.latest.num_versions or 1)
        logging = request_log_config(c)
        configs.append(ModelConfig(c.name, c.base_path, policy, dict(c.version_labels), logging=logging))
    return configs


def read_model_config_file(path: str) -> list[ModelConfig]:
    return parse_model_config_text(_read(path, "model config file"), path)


def read_batching_parameters(path: str | None, what: str = "batching parameters file") -> BatchingParameters:
    """A text-format BatchingParameters file, checked as TF Serving checks it (defaults: TF Serving's)."""
    if not path:
        return BatchingParameters()
    proto = _message_classes()["BatchingParameters"]()
    _parse(_read(path, what), proto, path)
    d = BatchingParameters()

    def value(name: str) -> Any:
        return getattr(proto, name).value if proto.HasField(name) else getattr(d, name)

    params = BatchingParameters(
        max_batch_size=value("max_batch_size"),
        batch_timeout_micros=value("batch_timeout_micros"),
        max_enqueued_batches=value("max_enqueued_batches"),
        num_batch_threads=value("num_batch_threads"),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
        pad_variable_length_inputs=proto.pad_variable_length_inputs,
        enable_large_batch_splitting=value("enable_large_batch_splitting"),
        max_execution_batch_size=value("max_execution_batch_size"),
    )
    _check_batching(params, path)
    return params


def _check_batching(params: BatchingParameters, path: str) -> None:
    if params.max_batch_size < 1 or params.num_batch_threads < 1 or params.max_enqueued_batches < 1:
        raise UsageError(f"{path}: max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1")
    if params.max_execution_batch_size < 0 or params.max_execution_batch_size > params.max_batch_size:
        raise UsageError(f"{path}: max_execution_batch_size must be between 1 and max_batch_size")
    sizes, last = params.allowed_batch_sizes, params.execution_limit
    if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != last):
        which = "max_execution_batch_size" if last != params.max_batch_size else "max_batch_size"
        raise UsageError(f"{path}: allowed_batch_sizes must increase and end with {which} ({last})")


BATCHING_PARAMS_FILE = "batching_params.pbtxt"


def per_model_batching(
    version_dir: str | os.PathLike[str], common: BatchingParameters
) -> BatchingParameters | None:
    """--enable_per_model_batching_parameters: the version's own batching_params.pbtxt, with the thread
    count of the common file (TF Serving shares one thread pool); None (no batching) when it has none."""
    path = os.path.join(version_dir, BATCHING_PARAMS_FILE)
    if not os.path.isfile(path):
        return None
    params = read_batching_parameters(path, "per-model batching parameters")
    return dataclasses.replace(params, num_batch_threads=common.num_batch_threads)


def read_session_config(path: str | None) -> Any:
    """--tensorflow_session_config_file: a text-format tensorflow.ConfigProto, or None when not given."""
    if not path:
        return None
    from tensorflow.core.protobuf import config_pb2

    proto = config_pb2.ConfigProto()
    _parse(_read(path, "TensorFlow session config file"), proto, path)
    return proto


def session_threads(options: ServeOptions) -> tuple[int, int]:
    """(intra-op, inter-op) threads from the three flags, by TF Serving's rule (0: leave it to TensorFlow)."""
    intra, inter = options.tensorflow_intra_op_parallelism, options.tensorflow_inter_op_parallelism
    both = options.tensorflow_session_parallelism
    if intra > 0 and inter > 0 and both > 0:
        raise UsageError(
            "Either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
            "--tensorflow_inter_op_parallelism) separately. You cannot configure all."
        )
    if intra > 0 or inter > 0:
        return intra, inter
    return both, both


def read_monitoring_config(path: str | None) -> MonitoringConfig:
    if not path:
        return MonitoringConfig()
    proto = _message_classes()["MonitoringConfig"]()
    _parse(_read(path, "monitoring config file"), proto, path)
    p = proto.prometheus_config
    return MonitoringConfig(p.enable, p.path or MonitoringConfig.prometheus_path)

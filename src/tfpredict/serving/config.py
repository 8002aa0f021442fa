"""TF Serving's configuration files: model_config_list, batching parameters, monitoring (text protos)."""

from __future__ import annotations

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

    def model_configs(self) -> list[ModelConfig]:
        if self.model_config_file:
            if self.model_base_path:
                raise UsageError("Give either --model_config_file or --model_base_path, not both")
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


@dataclass(frozen=True)
class BatchingParameters:
    """The fields of TF Serving's BatchingParameters that tfpredict honours (defaults: TF Serving's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 2
    allowed_batch_sizes: tuple[int, ...] = ()


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
        configs.append(ModelConfig(c.name, c.base_path, policy, dict(c.version_labels)))
    return configs


def read_model_config_file(path: str) -> list[ModelConfig]:
    return parse_model_config_text(_read(path, "model config file"), path)


def read_batching_parameters(path: str | None) -> BatchingParameters:
    if not path:
        return BatchingParameters()
    proto = _message_classes()["BatchingParameters"]()
    _parse(_read(path, "batching parameters file"), proto, path)
    d = BatchingParameters()
    params = BatchingParameters(
        max_batch_size=proto.max_batch_size.value if proto.HasField("max_batch_size") else d.max_batch_size,
        batch_timeout_micros=(
            proto.batch_timeout_micros.value
            if proto.HasField("batch_timeout_micros")
            else d.batch_timeout_micros
        ),
        max_enqueued_batches=(
            proto.max_enqueued_batches.value
            if proto.HasField("max_enqueued_batches")
            else d.max_enqueued_batches
        ),
        num_batch_threads=(
            proto.num_batch_threads.value if proto.HasField("num_batch_threads") else d.num_batch_threads
        ),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
    )
    if params.max_batch_size < 1 or params.num_batch_threads < 1 or params.max_enqueued_batches < 1:
        raise UsageError(f"{path}: max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1")
    sizes = params.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != params.max_batch_size):
        raise UsageError(
            f"{path}: allowed_batch_sizes must increase and end with max_batch_size ({params.max_batch_size})"
        )
    return params


def read_monitoring_config(path: str | None) -> MonitoringConfig:
    if not path:
        return MonitoringConfig()
    proto = _message_classes()["MonitoringConfig"]()
    _parse(_read(path, "monitoring config file"), proto, path)
    p = proto.prometheus_config
    return MonitoringConfig(p.enable, p.path or MonitoringConfig.prometheus_path)

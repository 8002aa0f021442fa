"""`serve()`: load the models, start REST + gRPC on one event loop, watch configs, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .config import (
    BatchingParameters,
    MonitoringConfig,
    ServeOptions,
    read_batching_parameters,
    read_model_config_file,
    read_monitoring_config,
)
from .health import Health
from .inference import InferenceService
from .loading import LoadPolicy, predictor_factory
from .memory import MemoryBudget
from .metrics import Metrics
from .models import ModelManager
from .request_log import RequestLog
from .response_cache import ResponseCache
from .status import ServingError
from .tls import H2, HTTP11, TlsConfig, grpc_server_credentials, read_ssl_config, server_context
from .warmup import warmup

log = logging.getLogger(__name__)


def serve(options: ServeOptions, ready: threading.Event | None = None) -> int:
    """Run the model server until SIGTERM / SIGINT; returns the process exit code."""
    configs = options.model_configs()  # config errors surface before anything loads
    load_predictor = predictor_factory(options)  # and session ones (threads, ConfigProto file)
    batching: BatchingParameters | None = None
    if options.enable_batching:
        batching = read_batching_parameters(options.batching_parameters_file)
    elif options.batching_parameters_file:
        log.warning("--batching_parameters_file is ignored without --enable_batching")
    monitoring = read_monitoring_config(options.monitoring_config_file)
    tls = read_ssl_config(options.ssl_config_file)
    if not options.port and not options.rest_api_port and not options.grpc_socket_path:
        raise UsageError("Give --port (gRPC), --grpc_socket_path and/or --rest_api_port (REST)")

    model_process = None
    if options.batching_process:
        if batching is None:
            raise UsageError("--batching_process runs batched calls: it needs --enable_batching")
        from .model_process import ModelProcess

        if options.tensorflow_session_config_file or options.xla_cpu_compilation_enabled:
            log.warning("--batching_process children get the thread flags only (no session config, no XLA)")

        def model_process(path: Path) -> Any:
            return ModelProcess(
                path,
                options.tensorflow_intra_op_parallelism,
                options.tensorflow_inter_op_parallelism,
                tags=options.saved_model_tags,
            )

    metrics = Metrics()
    request_log = RequestLog.for_models(configs, metrics, options.request_log_max_file_bytes)
    manager = ModelManager(
        configs,
        load_predictor=load_predictor,
        batching=batching,
        metrics=metrics,
        poll_seconds=options.file_system_poll_wait_seconds,
        warmup=(
            functools.partial(warmup, iterations=options.num_request_iterations_for_warmup)
            if options.enable_model_warmup
            else None
        ),
        model_process=model_process,
        policy=LoadPolicy.from_options(options),
        per_model_batching=options.enable_per_model_batching_parameters and batching is not None,
    )
    cache = response_cache(options, metrics, manager)
    service = InferenceService(
        manager,
        threads=options.rest_api_num_threads,
        cache=cache,
        request_log=request_log,
        method_name_check=options.enable_signature_method_name_check,
    )
    watcher = _ConfigWatcher(options, manager) if options.model_config_file else None
    try:
        return _event_loop_run(options, _run(options, service, metrics, monitoring, tls, ready))
    finally:
        if watcher is not None:
            watcher.stop()
        manager.close()
        service.close()


async def _run(
    options: ServeOptions,
    service: InferenceService,
    metrics: Metrics,
    monitoring: MonitoringConfig,
    tls: TlsConfig | None,
    ready: threading.Event | None,
) -> int:
    """Listen first, then load the models (so that health probes answer while they load), then serve
    until SIGTERM / SIGINT, then drain."""
    from .grpc_api import GrpcApi

    health = Health(service.manager)
    from .http1 import HttpServer
    from .rest import RestApi

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not POSIX
            pass

    budget = MemoryBudget(options.memory_budget_bytes)  # one for both front ends
    grpc_server: Any = None
    if options.port or options.grpc_socket_path:
        methods = GrpcApi(
            service,
            metrics,
            service.manager.reload_config,
            health=health if options.enable_grpc_healthcheck_service else None,
            tensor_content=options.enable_serialization_as_tensor_content,
        ).methods()
        if options.grpc_frontend == "grpcio":
            from .grpc_grpcio import GrpcioServer

            credentials = grpc_server_credentials(tls) if tls is not None else None
            grpc_server = GrpcioServer(
                methods, options.max_request_bytes, options.grpc_channel_arguments, credentials
            )
        else:
            from .grpc_server import GrpcServer

            if options.grpc_channel_arguments:
                log.info("--grpc_channel_arguments apply to --grpc_frontend=grpcio only: ignored")
            grpc_server = GrpcServer(methods, options.max_request_bytes, options.http2_limits, budget)
        if options.port:
            listen = (
                grpc_server.listen(options.host, options.port)
                if tls is None or options.grpc_frontend == "grpcio"  # grpcio has the credentials
                else grpc_server.listen(options.host, options.port, ssl=server_context(tls, [H2]))
            )
            await _bind("gRPC", options.host, options.port, listen)
        if options.grpc_socket_path:
            try:
                os.unlink(options.grpc_socket_path)  # a socket left by an earlier server
            except FileNotFoundError:
                pass
            await grpc_server.listen_unix(options.grpc_socket_path)
        await grpc_server.start()
    http = None
    if options.rest_api_port:
        prometheus = monitoring.prometheus_path if monitoring.prometheus_enable else None
        cors = options.rest_api_enable_cors_support
        api = RestApi(service, metrics, prometheus, options.rest_api_timeout_in_ms, health=health, cors=cors)
        http = HttpServer(api.handle, options.max_request_bytes, options.http1_limits, budget)
        if cors:
            http.extra_headers = CORS_HEADERS
        context = server_context(tls, [HTTP11]) if tls is not None else None
        await _bind(
            "REST",
            options.host,
            options.rest_api_port,
            http.start(options.host, options.rest_api_port, ssl=context),
        )
    parts = []
    if grpc_server is not None and options.port:
        parts.append(f"gRPC at {options.host}:{options.port}")
    if options.grpc_socket_path:
        parts.append(f"gRPC at unix:{options.grpc_socket_path}")
    if http is not None:
        parts.append(f"REST at {options.host}:{http.port}")
    if tls is not None:
        parts.append("TLS on the TCP ports" + (", client certificates required" if tls.client_verify else ""))
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    loading: asyncio.Future[Any] = loop.run_in_executor(None, _load_models, service.manager)
    await asyncio.wait({stopped, loading}, return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        loading.result()  # a bug while loading stops the server
        log.info("tfpredict serve: %s; models: %s", ", ".join(parts), ", ".join(service.manager.names()))
        if ready is not None:
            ready.set()
    await stopped
    health.stopping = True  # readiness fails, Watch streams end, while in-flight requests drain
    log.info("Shutting down: draining in-flight requests (up to %.0fs)", options.drain_seconds)
    waits = []
    if http is not None:
        waits.append(http.stop(options.drain_seconds))
    if grpc_server is not None:
        waits.append(grpc_server.stop(options.drain_seconds))
    await asyncio.gather(*waits)
    return 0


CORS_HEADERS = (  # --rest_api_enable_cors_support: TF Serving's AddCORSHeaders
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Allow-Methods: POST, GET\r\n"
    "Access-Control-Allow-Headers: Content-Type\r\n"
)


def _load_models(manager: ModelManager) -> None:
    """The initial load (in a thread: the ports already answer, health says NOT_SERVING meanwhile)."""
    manager.start()
    # TensorFlow and the models leave ~350k objects that every full garbage collection would walk
    # (~130 ms here, stalling all requests); requests make short-lived objects only. Freeze what is loaded.
    gc.collect()
    gc.freeze()


def response_cache(options: ServeOptions, metrics: Metrics, manager: ModelManager) -> ResponseCache | None:
    """--response_cache_bytes (0: no cache), for --response_cache_models or every model."""
    if options.response_cache_bytes < 0:
        raise UsageError(f"--response_cache_bytes must be >= 0, got {options.response_cache_bytes}")
    if not options.response_cache_bytes:
        return None
    models = options.response_cache_models
    unknown = sorted(set(models or ()) - set(manager.names()))
    if unknown:
        log.warning("--response_cache_models names models not in the config: %s", ", ".join(unknown))
    log.info(
        "Response cache: up to %d bytes, for %s",
        options.response_cache_bytes,
        ", ".join(models or ["every model"]),
    )
    return ResponseCache(options.response_cache_bytes, metrics, models, manager.servables)


class _ConfigWatcher:
    """Re-reads --model_config_file every --model_config_file_poll_wait_seconds and applies changes."""

    def __init__(self, options: ServeOptions, manager: ModelManager) -> None:
        self.path = options.model_config_file
        self.period = options.model_config_file_poll_wait_seconds
        self.manager = manager
        self._stop = threading.Event()
        self._last = _read(self.path)
        self._thread = None
        if self.period > 0:
            self._thread = threading.Thread(target=self._loop, name="config-poller", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            text = _read(self.path)
            if text is None or text == self._last:
                continue
            self._last = text
            try:
                configs = read_model_config_file(self.path)
            except UsageError as exc:
                log.error("Keeping the current models: %s", exc.message)
                continue
            log.info("Model config file %s changed: reloading", self.path)
            try:
                self.manager.reload_config(configs)
            except ServingError as exc:  # a version label the config may not set (TF Serving's rule)
                log.error("Model config file %s: %s", self.path, exc.message)
            except Exception:
                log.exception("Applying the new model config failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


async def _bind(what: str, host: str, port: int, listen: Awaitable[Any]) -> None:
    """Start listening, or one line saying which port could not be bound and why."""
    try:
        await listen
    except OSError as exc:
        raise UsageError(f"Could not bind the {what} port {host}:{port}: {exc.strerror or exc}") from exc


def _event_loop_run(options: ServeOptions, main: Coroutine[Any, Any, int]) -> int:
    """asyncio's own loop, or uvloop (libuv, in C) with --event_loop=uvloop: +13-15% requests/s here,
    batching on and off alike (benchmarks/serve.py --event_loop uvloop)."""
    if options.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise UsageError("--event_loop=uvloop needs uvloop: pip install 'tfpredict[uvloop]'") from None
        return uvloop.run(main)  # type: ignore[no-any-return]
    return asyncio.run(main)


def configure_logging(level: int = logging.INFO) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

"""Served models: numeric version directories under each base path, loaded, watched and unloaded.

ModelManager keeps, for every configured model, the state of each version TF Serving's way (START,
LOADING, AVAILABLE, UNLOADING, END + an error status). A poll thread lists the base paths every
`file_system_poll_wait_seconds`: versions the policy (latest N / all / specific) wants are loaded,
versions it no longer wants are unloaded once another version is available, so a hot swap never leaves
a request without a model. A version that fails to load is logged in one line and marked END with its
error; the other models and versions keep serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2

from ..errors import TfpredictError
from .batcher import Batcher, LoopBatcher
from .config import BatchingParameters, ModelConfig, per_model_batching
from .json_codec import rows_to_examples
from .loading import FailedLoad, LoadPolicy, assign_labels
from .metrics import Metrics
from .model_process import SupervisedModelProcess
from .status import ServingError, as_serving_error

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"

# A call's key: (kind, signature, output filter, input layout). kind "tensors" feeds the signature's own
# input tensors (Predictor.run); kind "rows" feeds feature rows (Predictor.predict, the core's fast path).
CallKey = tuple[Any, ...]

# Below this many rows, building tf.Examples and letting the graph parse them beats the feature fast path:
# measured on bench_dnn, predict(rows) costs ~450us per call whatever the size (Arrow conversion), while
# serializing costs ~15us a row (1 row: 445us vs 179us; 8: 583 vs 458; 64: 746 vs 1721; 512: 1.8 vs 10 ms).
FAST_PATH_MIN_ROWS = 16


@dataclass
class VersionStatus:
    version: int
    state: str = START
    error_code: str = "OK"
    error_message: str = ""


class Servable:
    """One loaded model version: the Predictor, its SignatureDefs, and its batcher when batching is on."""

    def __init__(self, name: str, version: int, path: Path, predictor: Any, signature_defs: Any) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.predictor = predictor
        self.signature_defs = signature_defs  # tensorflow.serving.SignatureDefMap
        self.batcher: Batcher | LoopBatcher | None = None
        self._inflight = 0  # requests using this version; changed on the event loop's thread only
        self._memo: dict[Any, Any] = {}

    def execute(self, key: CallKey, data: Any) -> dict[str, np.ndarray]:
        kind, signature, outputs = key[0], key[1], key[2]
        out = list(outputs) if outputs else None
        if kind == "rows":
            serialized_input = self._serialized_input(signature)
            if serialized_input is None or len(data) >= FAST_PATH_MIN_ROWS:
                # TF Serving's semantics: a request's feature dicts may omit features (each is then absent).
                return self.predictor.predict(data, signature=signature, outputs=out, allow_missing=True)
            examples = rows_to_examples(data, self.predictor.inputs_for(signature))
            return self.predictor.run({serialized_input: examples}, signature=signature, outputs=out)
        return self.predictor.run(data, signature=signature, outputs=out)

    def _serialized_input(self, signature: str) -> str | None:
        """The signature's input of serialized tf.Examples, when it parses them (else None)."""
        return self.predictor.serialized_input_for(signature)

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """make() once per key for this version: checks and plans that depend only on the signature.
        A check that raises is not remembered, so every request for it gets its error."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = make()
            return value

    def __enter__(self) -> Servable:
        self._inflight += 1  # the request handlers all run on the server's event loop thread
        return self

    def __exit__(self, *exc: object) -> None:
        self._inflight -= 1

    def close(self, timeout: float = 30.0) -> None:
        """Wait for the requests still using this version (polled: a request must not pay for a
        lock on its way in and out), then free it."""
        if self.batcher is not None:
            self.batcher.close()
        deadline = time.monotonic() + timeout
        while self._inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.predictor.close()


@dataclass
class _Model:
    config: ModelConfig
    status: dict[int, VersionStatus] = field(default_factory=dict)
    servables: dict[int, Servable] = field(default_factory=dict)
    failed: dict[int, FailedLoad] = field(default_factory=dict)  # versions that failed to load
    labels: dict[str, int] = field(default_factory=dict)  # the labels in force (assign_labels)


def read_signature_defs(export_dir: Path, tags: list[str] | None = None) -> Any:
    """The SignatureDefMap of the meta graph with `tags` (default: the serving one), as GetModelMetadata
    answers it."""
    from ..savedmodel import choose_tags, read_saved_model

    wanted = set(tags or choose_tags(export_dir))
    result = get_model_metadata_pb2.SignatureDefMap()
    for mg in read_saved_model(export_dir).meta_graphs:
        if set(mg.meta_info_def.tags) == wanted:
            for k, v in mg.signature_def.items():
                result.signature_def[k].CopyFrom(v)
            break
    return result


def list_versions(base_path: str) -> dict[int, Path]:
    """The numeric version directories of a base path ({} when it does not exist). OSError when it, or a
    version entry, cannot be read (permissions, a symlink loop): the caller keeps what it serves."""
    try:
        entries = list(os.scandir(base_path))
    except FileNotFoundError:
        return {}
    versions = {}
    for e in entries:
        if e.name.isdigit():
            try:
                is_dir = e.is_dir()
            except OSError as exc:
                raise OSError(exc.errno, f"{exc.strerror} (version entry {e.name})", e.path) from exc
            if is_dir:
                versions[int(e.name)] = Path(e.path)
    return versions


def _fingerprint(path: Path) -> tuple[Any, ...]:
    """Changes while a version directory is still being copied in, so a failed load is retried."""
    count, size, mtime = 0, 0, 0.0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            count += 1
            size += st.st_size
            mtime = max(mtime, st.st_mtime)
    return (count, size, mtime)


def _labelled(model: _Model, label: str) -> int:
    """The version a label names (the labels in force: see ModelManager.assign_labels)."""
    if label not in model.labels:
        raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
    return model.labels[label]


class ModelManager:
    """Loads, serves and unloads the versions of the configured models; thread-safe."""

    def __init__(
        self,
        configs: list[ModelConfig],
        *,
        load_predictor: Callable[[Path], Any],
        batching: BatchingParameters | None = None,
        metrics: Metrics | None = None,
        poll_seconds: float = 1.0,
        warmup: Callable[[Servable], int] | None = None,
        model_process: Callable[[Path], Any] | None = None,
        policy: LoadPolicy | None = None,
        per_model_batching: bool = False,
    ) -> None:
        self._policy = policy or LoadPolicy()  # load threads, retries, labels (loading.py)
        self._per_model_batching = per_model_batching  # --enable_per_model_batching_parameters
        self._load_predictor = load_predictor
        self._model_process = model_process  # --batching_process: starts a ModelProcess for a version
        self._batching = batching
        self._metrics = metrics or Metrics()
        self._poll_seconds = poll_seconds
        self._warmup = warmup
        self._models: dict[str, _Model] = {c.name: _Model(c) for c in configs}
        self._lock = threading.Lock()  # guards _models and the servables/status dicts
        self._sync_lock = threading.Lock()  # one sync (poll or reload) at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load what the configs ask for (blocking, like TF Serving's start-up), then watch the base paths."""
        self.sync()
        for error in self.assign_labels():
            log.error("%s: the label is not assigned", error)
        if self._poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="model-poller", daemon=True)
            self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        with self._sync_lock:
            with self._lock:
                servables = [s for m in self._models.values() for s in m.servables.values()]
                for m in self._models.values():
                    m.servables.clear()
            for s in servables:
                s.close(timeout=5)

    def reload_config(self, configs: list[ModelConfig]) -> None:
        """Serve exactly these models from now on (HandleReloadConfigRequest, config file polling)."""
        with self._sync_lock:
            removed: list[Servable] = []
            with self._lock:
                wanted = {c.name: c for c in configs}
                for name in list(self._models):
                    if name not in wanted:
                        removed += self._models.pop(name).servables.values()
                for name, c in wanted.items():
                    if name in self._models:
                        self._models[name].config = c
                    else:
                        self._models[name] = _Model(c)
            for s in removed:
                log.info("Unloading model %s version %d (removed from the config)", s.name, s.version)
                s.close()
            self._sync_all()
            errors = self.assign_labels()
        if errors:
            raise ServingError("FAILED_PRECONDITION", errors[0])

    def assign_labels(self) -> list[str]:
        """Put the configs' version labels in force, by TF Serving's rule (loading.assign_labels); a model
        whose labels break it keeps the labels it had. Returns the errors."""
        errors = []
        with self._lock:
            for model in self._models.values():
                available = {v for v, st in model.status.items() if st.state == AVAILABLE}
                model.labels, error = assign_labels(
                    model.config.name, model.config.labels, model.labels, available, self._policy
                )
                if error:
                    errors.append(error)
        return errors

    def sync(self) -> None:
        with self._sync_lock:
            self._sync_all()

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.sync()
            except Exception:  # the poller must survive anything a file system can do
                log.exception("model poll failed")

    # ------------------------------------------------------------------ loading / unloading
    def _sync_all(self) -> None:
        with self._lock:
            models = list(self._models.values())
        self._policy.each(self._sync_one, models)  # --num_load_threads models at once

    def _sync_one(self, model: _Model) -> None:
        try:
            self._sync_model(model)
        except OSError as exc:  # this base path only: the other models keep being polled
            where = exc.filename or model.config.base_path
            log.error(
                "Model %s: cannot read %s: %s; serving the versions loaded before, retrying every poll",
                model.config.name, where, exc.strerror or exc,
            )  # fmt: skip
            if not model.servables:
                message = f"Cannot read {where} for model {model.config.name}: {exc.strerror or exc}"
                model.status[-1] = VersionStatus(-1, END, "NOT_FOUND", message)

    def _sync_model(self, model: _Model) -> None:
        c = model.config
        on_disk = list_versions(c.base_path)
        if not on_disk and not model.servables and not model.status:
            if not os.path.isdir(c.base_path):
                log.error("Model %s: base path %s does not exist", c.name, c.base_path)
            else:
                log.error("Model %s: no numeric version directories under %s", c.name, c.base_path)
            model.status[-1] = VersionStatus(
                -1, END, "NOT_FOUND", f"No versions of model {c.name} found under {c.base_path}"
            )
            return
        model.status.pop(-1, None)
        wanted = c.policy.select(list(on_disk))
        for v in sorted(wanted, reverse=True):  # newest first: it is the one requests go to
            if v in model.servables:
                continue
            path = on_disk[v]
            if v in model.failed and not model.failed[v].due(_fingerprint(path), self._policy):
                continue
            self._load(model, v, path)
        with self._lock:
            available = [v for v in model.servables if v in wanted]
            stale = [v for v in model.servables if v not in wanted]
            if not available and stale and on_disk:
                stale.remove(max(stale))  # keep serving something until a wanted version loads
            going = [model.servables.pop(v) for v in stale]
            for s in going:
                model.status[s.version] = VersionStatus(s.version, UNLOADING)
        for s in going:
            log.info("Unloading model %s version %d", s.name, s.version)
            s.close()
            with self._lock:
                model.status[s.version] = VersionStatus(s.version, END)
        for v in list(model.failed):
            if v not in on_disk:
                model.failed.pop(v)

    def _load(self, model: _Model, version: int, path: Path) -> None:
        name = model.config.name
        with self._lock:
            model.status[version] = VersionStatus(version, LOADING)
        log.info("Loading model %s version %d from %s", name, version, path)
        start = time.perf_counter()
        predictor = None
        batching = self._batching
        try:
            if batching is not None and self._per_model_batching:  # the version's own, or none
                batching = per_model_batching(path, batching)
            predictor = self._load_predictor(path)
            servable = Servable(name, version, path, predictor, read_signature_defs(path, predictor.tags))
            if self._warmup is not None:
                n = self._warmup(servable)
                if n:
                    log.info("Model %s version %d: replayed %d warm-up requests", name, version, n)
            if batching is not None and self._model_process is not None:
                spawn = self._model_process
                child = SupervisedModelProcess(lambda: spawn(path), self._status_setter(model, version))
                servable.batcher = LoopBatcher(
                    batching, child.call, on_batch=self._batch_observer(name), close=child.close
                )
            elif batching is not None:
                servable.batcher = Batcher(
                    batching,
                    servable.execute,
                    name=f"{name}-{version}",
                    on_batch=self._batch_observer(name),
                )
        except Exception as exc:
            if predictor is not None:
                predictor.close()
            if isinstance(exc, TfpredictError):  # not a SavedModel, no usable signature, ...
                code, message = "FAILED_PRECONDITION", exc.message
            else:  # TensorFlow's own errors keep their code; anything else is UNKNOWN
                err = as_serving_error(exc)
                code, message = ("UNKNOWN" if err.code == "INTERNAL" else err.code), err.message
            fingerprint = _fingerprint(path)
            with self._lock:
                model.status[version] = VersionStatus(version, END, code, message)
                before = model.failed.get(version)
                attempts = before.attempts + 1 if before and before.fingerprint == fingerprint else 1
                model.failed[version] = FailedLoad(fingerprint, attempts, time.monotonic())
            retries = max(0, self._policy.max_retries - attempts + 1)
            log.error(
                "Model %s version %d at %s failed to load: %s%s", name, version, path, message,
                f" (retry in {self._policy.retry_interval_seconds:g}s, {retries} left)" if retries else "",
            )  # fmt: skip
            return
        with self._lock:
            model.servables[version] = servable
            model.status[version] = VersionStatus(version, AVAILABLE)
            model.failed.pop(version, None)
        micros = (time.perf_counter() - start) * 1e6
        self._metrics.load_latency.observe(micros, name, str(version))
        log.info("Model %s version %d is AVAILABLE (loaded in %.2fs)", name, version, micros / 1e6)

    def _status_setter(self, model: _Model, version: int) -> Callable[[str], None]:
        """For a version's model process: LOADING while it is restarted, AVAILABLE again once it is."""

        def set_state(state: str) -> None:
            with self._lock:
                if version in model.servables:  # not being unloaded meanwhile
                    model.status[version] = VersionStatus(version, state)
            log.warning("Model %s version %d is %s (its model process)", model.config.name, version, state)

        return set_state

    def _batch_observer(self, name: str) -> Callable[[int, list[float]], None]:
        metrics = self._metrics

        def observe(size: int, waits: list[float]) -> None:
            metrics.batch_size.observe(size, name)
            metrics.queue_latency.observe_many([w * 1e6 for w in waits], name)

        return observe

    # ------------------------------------------------------------------ lookups
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request asks for (latest available, a version, or a label), or a ServingError."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
                raise ServingError("NOT_FOUND", f"Servable not found for request: {what}")
            if label is not None:
                version = _labelled(model, label)
            if version is not None:
                s = model.servables.get(version)
                if s is not None:
                    return s
                st = model.status.get(version)
                if st is not None and st.state == LOADING:
                    raise ServingError("UNAVAILABLE", f"Model {name} version {version} is still loading")
                if st is not None and st.error_code != "OK":
                    raise ServingError(
                        "FAILED_PRECONDITION", f"Model {name} version {version}: {st.error_message}"
                    )
                raise ServingError(
                    "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                )
            if model.servables:
                return model.servables[max(model.servables)]
            states = list(model.status.values())
        if any(st.state == LOADING for st in states):
            raise ServingError("UNAVAILABLE", f"Model {name} is still loading; retry shortly")
        errors = [st for st in states if st.error_code != "OK"]
        if errors:
            st = max(errors, key=lambda s: s.version)
            raise ServingError(
                "FAILED_PRECONDITION", f"Model {name} has no loaded version: {st.error_message}"
            )
        raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if label is not None:
                version = _labelled(model, label)
            statuses = sorted((s for s in model.status.values() if s.version >= 0), key=lambda s: s.version)
            if version is not None:
                statuses = [s for s in statuses if s.version == version]
                if not statuses:
                    raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
            elif not statuses:
                missing = model.status.get(-1)
                raise ServingError(
                    "NOT_FOUND",
                    missing.error_message if missing else f"Could not find any versions of model {name}",
                )
            return [VersionStatus(s.version, s.state, s.error_code, s.error_message) for s in statuses]

    def servables(self) -> list[Servable]:
        with self._lock:
            return [s for m in self._models.values() for s in m.servables.values()]

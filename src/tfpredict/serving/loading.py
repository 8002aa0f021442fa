"""How model versions load, from TF Serving's flags: each session's configuration (threads, XLA, a
ConfigProto file), how many models load at once, retries of a failed load, and which version labels a
config may set. ModelManager (models.py) applies the policy; server.py builds it from ServeOptions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .config import ServeOptions, read_session_config, session_threads

log = logging.getLogger(__name__)
T = TypeVar("T")


def predictor_factory(options: ServeOptions) -> Callable[[Path], Any]:
    """Predictor.load with the session the flags ask for: --tensorflow_session_config_file as the base,
    the threads of --tensorflow_session_parallelism or the intra/inter flags, XLA with
    --xla_cpu_compilation_enabled (or --xla_gpu_compilation_enabled, which includes the CPU), the tags."""
    from ..predictor import Predictor

    base = read_session_config(options.tensorflow_session_config_file)  # a bad file fails at start-up
    intra, inter = session_threads(options)
    xla = options.xla_cpu_compilation_enabled or options.xla_gpu_compilation_enabled

    def load(path: Path) -> Any:
        return Predictor.load(
            path,
            intra_op_threads=intra or None,
            inter_op_threads=inter or None,
            xla=xla,
            session_config=base,
            tags=options.saved_model_tags,
        )

    return load


@dataclass(frozen=True)
class LoadPolicy:
    """--num_load_threads, --max_num_load_retries, --load_retry_interval_micros,
    --allow_version_labels_for_unavailable_models (TF Serving's defaults)."""

    load_threads: int = 0  # 0: one model after the other
    max_retries: int = 5
    retry_interval_seconds: float = 60.0
    labels_for_unavailable: bool = False

    @classmethod
    def from_options(cls, options: ServeOptions) -> LoadPolicy:
        return cls(
            max(0, options.num_load_threads),
            max(0, options.max_num_load_retries),
            max(0.0, options.load_retry_interval_micros / 1e6),
            options.allow_version_labels_for_unavailable_models,
        )

    def each(self, fn: Callable[[T], None], items: Iterable[T]) -> None:
        """fn(item) for every item: in turn, or on up to load_threads threads at once."""
        items = list(items)
        if self.load_threads <= 1 or len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(min(self.load_threads, len(items)), thread_name_prefix="load") as pool:
            for _ in pool.map(fn, items):
                pass


@dataclass
class FailedLoad:
    """A version that failed to load: retried on a poll once the interval has passed (up to max_retries
    times), or at once when its files change (still being copied in)."""

    fingerprint: tuple[Any, ...]
    attempts: int = 1
    last: float = 0.0

    def due(self, fingerprint: tuple[Any, ...], policy: LoadPolicy, now: float | None = None) -> bool:
        if fingerprint != self.fingerprint:
            return True
        now = time.monotonic() if now is None else now
        return self.attempts <= policy.max_retries and now - self.last >= policy.retry_interval_seconds


def assign_labels(
    name: str,
    wanted: dict[str, int],
    current: dict[str, int],
    available: set[int],
    policy: LoadPolicy,
) -> tuple[dict[str, int], str]:
    """The label map to use for a model, and an error ("" when none): TF Serving's rule, a label may point
    only at an AVAILABLE version, unless --allow_version_labels_for_unavailable_models lets a new label
    (or one that keeps its version) point at a version still to come. On an error the current map stays."""
    for label, version in sorted(wanted.items()):
        if version in available:
            continue
        if policy.labels_for_unavailable and current.get(label, version) == version:
            continue
        return current, (
            f"Request to assign label to version {version} of model {name}, which is not currently "
            "available for inference"
        )
    return dict(wanted), ""

"""Request counts, latencies and batch sizes, exported in the Prometheus text format (no dependency)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

# TF Serving's metric names, so dashboards built for tensorflow_model_server keep working.
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
QUEUE_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
MODEL_LOAD_LATENCY = ":tensorflow:serving:load_latency"
# tfpredict's own (TF Serving has neither a response cache nor an open-source request logger).
RESPONSE_CACHE = ":tfpredict:serving:response_cache"
RESPONSE_CACHE_BYTES = ":tfpredict:serving:response_cache_bytes"
REQUEST_LOG = ":tfpredict:serving:request_log"

# Microseconds, as TF Serving reports latencies.
LATENCY_BUCKETS_US = (
    100,
    250,
    500,
    1000,
    2000,
    5000,
    10000,
    20000,
    50000,
    100000,
    250000,
    500000,
    1000000,
    5000000,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self._values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] += amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            for labels, v in sorted(self._values.items()):
                lines.append(f"{self.name}{_labels(self.label_names, labels)} {v:g}")
        return lines


class Gauge:
    """One value without labels, read from its owner when rendered (`read_from`: the response cache's
    size in bytes, which changes on every insert and is read once per scrape); 0 until it has one."""

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self._read: Callable[[], float] = lambda: 0.0

    def read_from(self, read: Callable[[], float]) -> None:
        self._read = read

    def value(self) -> float:
        return self._read()

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {self.value():g}",
        ]


class Histogram:
    def __init__(self, name: str, help: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.label_names, self.buckets = name, help, labels, buckets
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., +Inf count, sum
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            s = self._series.get(labels)
            if s is None:
                s = self._series[labels] = [0.0] * (len(self.buckets) + 2)
            s[i] += 1
            s[-1] += value

    def observe_many(self, values: list[float], *labels: str) -> None:
        """observe() for each value, under one lock (a batch's queueing latencies)."""
        buckets, find = self.buckets, bisect.bisect_left
        with self._lock:
            s = self._series.get(labels)
            if s is None:
                s = self._series[labels] = [0.0] * (len(buckets) + 2)
            for value in values:
                s[find(buckets, value)] += 1
            s[-1] += sum(values)

    def count(self, *labels: str) -> int:
        s = self._series.get(labels)
        return int(sum(s[:-1])) if s else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for labels, s in sorted(self._series.items()):
                cumulative = 0.0
                for bound, n in zip(self.buckets, s, strict=False):
                    cumulative += n
                    le = f'le="{bound:g}"'
                    lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative:g}")
                cumulative += s[len(self.buckets)]
                inf = 'le="+Inf"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, inf)} {cumulative:g}")
                lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {s[-1]:g}")
                lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {cumulative:g}")
        return lines


class Metrics:
    """The server's metrics; one instance shared by the REST and gRPC front ends and the batchers."""

    def __init__(self) -> None:
        self.request_count = Counter(REQUEST_COUNT, "The total number of requests.", ("model_name", "status"))
        self.request_latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for requests.",
            ("model_name", "API", "entrypoint"),
            LATENCY_BUCKETS_US,
        )
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Distribution of the sizes of batches run by the model.",
            ("model_name",),
            BATCH_BUCKETS,
        )
        self.queue_latency = Histogram(
            QUEUE_LATENCY,
            "Distribution of the time (in microseconds) a request waits in the batching queue.",
            ("model_name",),
            LATENCY_BUCKETS_US,
        )
        self.load_latency = Histogram(
            MODEL_LOAD_LATENCY,
            "Distribution of the time (in microseconds) taken to load a model version.",
            ("model_name", "model_version"),
            (1e5, 5e5, 1e6, 2e6, 5e6, 1e7, 3e7, 6e7),
        )
        self.response_cache = Counter(
            RESPONSE_CACHE,
            "Response cache lookups (hit, miss) and entries removed (eviction, invalidation).",
            ("model_name", "event"),
        )
        self.response_cache_bytes = Gauge(RESPONSE_CACHE_BYTES, "Bytes held by the response cache.")
        self.request_log = Counter(
            REQUEST_LOG,
            "Sampled requests logged (written), or not: the writer's queue was full (dropped), or the "
            "entry could not be written (failed).",
            ("model_name", "result"),
        )

    def record_request(self, model: str, api: str, entrypoint: str, status: str, micros: float) -> None:
        self.request_count.inc(model, status)
        if status == "OK":
            self.request_latency.observe(micros, model, api, entrypoint)

    def render(self) -> str:
        lines: list[str] = []
        for m in (
            self.request_count,
            self.request_latency,
            self.batch_size,
            self.queue_latency,
            self.load_latency,
            self.response_cache,
            self.response_cache_bytes,
            self.request_log,
        ):
            lines += m.render()
        return "\n".join(lines) + "\n"

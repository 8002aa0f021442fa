"""The export as Spark's executors get it, and the Predictor each Python worker keeps.

Shipped (default): the version directory zipped on the driver and added with SparkContext.addArchive, which
Spark copies to every executor and unpacks once there, so the nodes need no shared file system. Shared: a
path every node reads as it is (a mounted bucket, DBFS, NFS). Either way a Python worker loads the export
the first time one of its tasks needs it and keeps the Predictor for every later task (Spark reuses the
worker: spark.python.worker.reuse), so a job pays one load per worker, not one per partition.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..predictor import Predictor
from .common import LoadOptions, load_predictor

#: Predictors a Python worker keeps (different exports or settings in one session); the oldest is closed.
CACHED_PREDICTORS = 2


@dataclass(frozen=True)
class ExportRef:
    """Where an executor finds the export: an archive Spark unpacked there (`archive`), or `path` itself."""

    path: str
    archive: str | None = None  # the archive's file name (SparkFiles.get gives its unpacked directory)
    version_dir: str = ""  # the version directory's name inside the archive

    def local_dir(self) -> str:
        """The export's directory on the node this runs on."""
        if self.archive is None:
            return self.path
        from pyspark import SparkFiles

        return str(Path(SparkFiles.get(self.archive)) / self.version_dir)


_archives: dict[str, Path] = {}  # digest -> archive on the driver, added to the session once
_archive_root: list[Path] = []


def ship_export(spark: Any, export: str | os.PathLike[str], *, shared: bool = False) -> ExportRef:
    """Make an export reachable from every executor (shared=True: they read `export` as it is)."""
    if shared:
        return ExportRef(str(export))
    from ..savedmodel import resolve_export_dir

    version_dir = resolve_export_dir(export)
    digest = _digest(version_dir)
    archive = _archives.get(digest)
    if archive is None:
        if not _archive_root:
            _archive_root.append(Path(tempfile.mkdtemp(prefix="tfpredict-spark-")))
            atexit.register(shutil.rmtree, _archive_root[0], ignore_errors=True)
        archive = _archive_root[0] / f"tfpredict-export-{digest}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
            for f in sorted(version_dir.rglob("*")):
                if f.is_file():
                    z.write(f, str(Path(version_dir.name) / f.relative_to(version_dir)))
        _archives[digest] = archive
    context = spark.sparkContext
    if str(archive) not in _added(context):
        context.addArchive(str(archive))
        _added(context).add(str(archive))
    return ExportRef(str(version_dir), archive.name, version_dir.name)


_added_by_app: dict[str, set[str]] = {}


def _added(context: Any) -> set[str]:
    # A new Spark application (another session) has none of our archives yet.
    return _added_by_app.setdefault(str(context.applicationId), set())


def _digest(version_dir: Path) -> str:
    """A digest of the export's files (names, sizes, times): the same export is zipped and added once."""
    h = hashlib.sha256(str(version_dir.resolve()).encode())
    for f in sorted(version_dir.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(version_dir)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


# ------------------------------------------------------------------------------------- on the executors


@dataclass
class LoadedPredictor:
    predictor: Predictor
    load_seconds: float  # from this Python worker's start (importing TensorFlow) to the loaded export


def process_age() -> float | None:
    """Seconds since this process started (Linux), else None."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


_predictors: OrderedDict[tuple[ExportRef, LoadOptions], LoadedPredictor] = OrderedDict()
_lock = threading.Lock()


def cached_predictor(ref: ExportRef, options: LoadOptions) -> tuple[LoadedPredictor, bool]:
    """This worker's Predictor for (export, options), loading it the first time; True when it loaded now."""
    key = (ref, options)
    with _lock:
        found = _predictors.get(key)
        if found is not None:
            _predictors.move_to_end(key)
            return found, False
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        started = time.perf_counter()
        predictor = load_predictor(ref.local_dir(), options)
        age = process_age() if not _predictors else None  # the first load also paid the imports
        loaded = LoadedPredictor(predictor, age if age is not None else time.perf_counter() - started)
        _predictors[key] = loaded
        while len(_predictors) > CACHED_PREDICTORS:
            _, old = _predictors.popitem(last=False)
            old.predictor.close()
        return loaded, True


__all__ = ["CACHED_PREDICTORS", "ExportRef", "cached_predictor", "ship_export"]

"""The Spark session of a job: pyspark and Java checked first (one line saying what to install), then a
session on `local[*]` or the cluster at --master, with the settings the engine relies on."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from typing import Any

from ..errors import UsageError

INSTALL_HINT = "pip install 'tfpredict[spark]'"
JAVA_HINT = "apt-get install default-jre-headless (Debian/Ubuntu), or set JAVA_HOME to a Java 17+ runtime"

#: Memory of the driver JVM we start: it plans the job and moves no rows (the rows go executor -> Python).
DRIVER_MEMORY = "1g"


def import_pyspark() -> Any:
    """The `pyspark` module, or a UsageError with the one-line install command (pyspark, or Java)."""
    try:
        import pyspark
        import pyspark.sql  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine spark needs pyspark, which is not installed: {INSTALL_HINT}") from None
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise UsageError(f"--engine spark needs Java, which is not installed: {JAVA_HINT}")
    return pyspark


def session_settings(
    master: str | None, executors: int | None, batch_size: int, progress: bool = False
) -> dict[str, str]:
    """The Spark settings of a job: where it runs, and what the engine relies on (reused Python workers, Arrow
    batches of `batch_size` rows)."""
    if executors is not None and executors < 1:
        raise UsageError(f"--executors must be at least 1, not {executors}")
    settings = {
        "spark.master": master or (f"local[{executors}]" if executors else "local[*]"),
        "spark.app.name": "tfpredict",
        # One Python worker per task slot, kept across tasks: each loads the export once (spark_worker.py).
        "spark.python.worker.reuse": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_size),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "true" if progress else "false",
        "spark.driver.memory": DRIVER_MEMORY,
    }
    if master and executors:
        settings["spark.executor.instances"] = str(executors)  # YARN, Kubernetes
        if master.startswith("spark://"):  # standalone: executors of spark.executor.cores (1) each
            settings.setdefault("spark.executor.cores", "1")
            settings["spark.cores.max"] = str(executors)
    return settings


@contextlib.contextmanager
def spark_session(
    master: str | None = None, executors: int | None = None, *, batch_size: int = 8192, quiet: bool = True
) -> Iterator[Any]:
    """The active SparkSession if the caller has one (used as is), else one started on `master` (default
    local[*]) and stopped at the end."""
    import_pyspark()
    from pyspark.sql import SparkSession

    if quiet:  # pyspark's advice on pandas versions, for us and not for the user
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark(\.|$)")
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    builder = SparkSession.builder
    for key, value in session_settings(master, executors, batch_size, progress=not quiet).items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start, or the master is unreachable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot start Spark on {master or 'local[*]'}: {first}") from None
    if quiet:
        spark.sparkContext.setLogLevel("ERROR")
        logging.getLogger("py4j").setLevel(logging.ERROR)
    try:
        yield spark
    finally:
        with contextlib.suppress(Exception):
            spark.sparkContext.cancelAllJobs()
        spark.stop()


__all__ = ["INSTALL_HINT", "JAVA_HINT", "import_pyspark", "session_settings", "spark_session"]

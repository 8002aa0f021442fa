"""A Spark standalone cluster on this machine (a master and two workers of 1 core each, on 127.0.0.1, started
with pyspark's own spark-class): the CLI job through --master spark://... predicts on both workers'
executors, and each of their Python workers loads the export once."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pyspark = pytest.importorskip("pyspark")

from ..conftest import load_fixture  # noqa: E402
from .conftest import read_rows, split_inputs  # noqa: E402
from .processes import free_port, stop_cluster  # noqa: E402

HOST = "127.0.0.1"
WORKER_LINE = re.compile(
    r"spark: executor (\S+) \(([^)]*)\) worker (\d+): ([\d,]+) rows, [\d,]+ rows/s while busy, "
    r"export loaded (\d+)x"
)


def _spark_class() -> str:
    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _wait(what: str, ready, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not ready after {timeout:.0f} s")


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ui_port}/json/", timeout=5) as r:
            import json

            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], list[Path]]]:
    """spark://127.0.0.1:PORT with two 1-core workers, each with its own work directory; every JVM small."""
    temp = tmp_path_factory.mktemp(f"spark-{secrets.token_hex(4)}", numbered=False)  # names only this cluster
    conf = temp / "conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text("spark.executor.memory 512m\n")
    env = {
        **os.environ,
        "SPARK_CONF_DIR": str(conf),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_DAEMON_MEMORY": "512m",
        # The marker stop_cluster finds these JVMs by (their executors and Python workers are children).
        "SPARK_DAEMON_JAVA_OPTS": f"-Dtfpredict.test.cluster={temp}",
        "PYSPARK_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    port, ui = free_port(), free_port()
    master = f"spark://{HOST}:{port}"
    work_dirs = [temp / "worker1", temp / "worker2"]
    procs = []
    try:
        log = (temp / "master.log").open("w")
        procs.append(subprocess.Popen(
            [_spark_class(), "org.apache.spark.deploy.master.Master",
             "--host", HOST, "--port", str(port), "--webui-port", str(ui)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        _wait("master", lambda: _listening(port) and _listening(ui))
        for w in work_dirs:
            w.mkdir()
            log = (temp / f"{w.name}.log").open("w")
            procs.append(subprocess.Popen(
                [_spark_class(), "org.apache.spark.deploy.worker.Worker", "--host", HOST,
                 "--cores", "1", "--memory", "1g", "--work-dir", str(w), "--webui-port", "0", master],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        _wait("two workers", lambda: _alive_workers(ui) == 2)
        yield master, env, work_dirs
    finally:
        stop_cluster(str(temp))
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_job_through_master_runs_on_both_workers(
    cluster: tuple[str, dict[str, str], list[Path]], tmp_path: Path
) -> None:
    master, env, work_dirs = cluster
    fx = load_fixture("dnn_binary")
    from tfpredict.predictor import Predictor

    with Predictor.load(fx.export) as p:
        schema = p.inputs
    files = split_inputs(fx.csv, schema, tmp_path / "in", parts=8, formats=("csv", "parquet"))
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "tfpredict", "predict", str(fx.export), *map(str, files), "-o", str(out),
           "--engine", "spark", "--master", master, "--executors", "2", "--keep", "id",
           "--batch-size", "4"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_rows(out)
    assert [int(r["id"]) for r in rows] == list(range(50)) * 2  # in input order: csv files, then parquet
    workers = WORKER_LINE.findall(done.stderr)
    assert len(workers) == 2, done.stderr
    # One executor per worker (its working directory is inside that worker's work dir), both predicting.
    homes = {next(w.name for w in work_dirs if f":{w}/" in where) for _, where, _, _, _ in workers}
    assert homes == {"worker1", "worker2"}, workers
    assert len({executor for executor, *_ in workers}) == 2, workers
    assert all(int(n.replace(",", "")) > 0 for *_, n, _ in workers), workers
    assert sum(int(n.replace(",", "")) for *_, n, _ in workers) == 100
    # Each executor's one Python worker (1 core) loaded the export once, for all of its tasks.
    assert [loads for *_, loads in workers] == ["1", "1"], workers
    assert "2 Python worker(s) on 2 executor(s), 2 export load(s)" in done.stderr

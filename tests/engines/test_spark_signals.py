"""Ctrl-C in the middle of a Spark job: exit 130, and nothing at OUTPUT_DIR (nor Spark's temporary files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pyspark")

from ..conftest import load_fixture  # noqa: E402


def test_ctrl_c_mid_job_leaves_nothing(tmp_path: Path) -> None:
    fx = load_fixture("dnn_binary")
    header, *rows = fx.csv.read_text().splitlines()
    files = []
    for i in range(4):
        f = tmp_path / f"part{i}.csv"
        f.write_text("\n".join([header, *rows * 400]) + "\n")  # 20,000 rows each
        files.append(f)
    out = tmp_path / "out" / "predictions.parquet"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "tfpredict", "predict", str(fx.export), *map(str, files), "-o", str(out),
           "--engine", "spark", "--executors", "2", "--batch-size", "256"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        # Spark's writer has started once the hidden temporary directory exists: the job is under way.
        while time.monotonic() < deadline and proc.poll() is None and not list(out.parent.glob(".*tmp-*")):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert list(out.parent.glob(".*tmp-*")), "the job did not start writing in 180 s"
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert list(out.parent.iterdir()) == [], list(out.parent.iterdir())

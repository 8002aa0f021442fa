"""A 2-node Ray cluster on this machine (loopback only): the job runs through --address on both nodes."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from ..conftest import load_fixture  # noqa: E402
from .conftest import read_rows, split_inputs  # noqa: E402
from .processes import free_port, stop_cluster  # noqa: E402

# 127.0.0.2, not 127.0.0.1: Ray replaces "127.0.0.1" by the machine's network address; any other loopback
# address it takes as given, so both nodes stay on the loopback interface.
NODE_IP = "127.0.0.2"


def _ray(*args: str, env: dict[str, str]) -> None:
    ray_cli = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_cli, *args], env=env, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A head node and a second node with 1 CPU each (the second has a `node2` resource), token-authenticated
    with a token made for this test."""
    port = free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_DEDUP_LOGS": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("RAY_ADDRESS", None)
    temp = tmp_path_factory.mktemp(f"ray-{secrets.token_hex(4)}", numbered=False)  # names only this cluster
    address = f"{NODE_IP}:{port}"
    try:
        _ray(
            "start",
            "--head",
            f"--port={port}",
            f"--node-ip-address={NODE_IP}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--object-store-memory=300000000",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            env=env,
        )
        _ray(
            "start",
            f"--address={address}",
            f"--node-ip-address={NODE_IP}",
            "--num-cpus=1",
            '--resources={"node2": 1}',
            "--object-store-memory=300000000",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            env=env,
        )
        yield address, env
    finally:
        stop_cluster(str(temp))


def test_job_through_address_runs_on_both_nodes(cluster: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = cluster
    fx = load_fixture("dnn_binary")
    from tfpredict.predictor import Predictor

    with Predictor.load(fx.export) as p:
        schema = p.inputs
    files = split_inputs(fx.csv, schema, tmp_path / "in", parts=8, formats=("csv",))
    out = tmp_path / "out.parquet"
    cmd = [
        sys.executable,
        "-m",
        "tfpredict",
        "predict",
        str(fx.export),
        *map(str, files),
        "-o",
        str(out),
        "--engine",
        "ray",
        "--address",
        address,
        "--workers",
        "2",
        "--keep",
        "id",
        "--batch-size",
        "4",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_rows(out)
    assert sorted(int(r["id"]) for r in rows) == list(range(50))
    assert "2 actor(s) on 2 node(s)" in done.stderr, done.stderr
    per_node = re.findall(r"ray: node (\w+) \(([\d.]+)\) actor \w+: ([\d,]+) rows", done.stderr)
    assert len({node for node, _, _ in per_node}) == 2, done.stderr
    assert all(int(n.replace(",", "")) > 0 for _, _, n in per_node), done.stderr
    assert {ip for _, ip, _ in per_node} == {NODE_IP}

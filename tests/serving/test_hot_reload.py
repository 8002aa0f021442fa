"""Hot reload: a version directory copied into the base path is served within the poll interval plus its
load time, while a client loop runs throughout without a single failed request."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from .conftest import Server

POLL_SECONDS = 1.0


def test_new_version_is_served_without_failed_requests(testdata: dict[str, str], tmp_path: Path) -> None:
    base = tmp_path / "model"
    shutil.copytree(Path(testdata["saved_model_half_plus_two_cpu"]) / "00000123", base / "1")
    server = Server(
        "--model_name=hot", f"--model_base_path={base}", f"--file_system_poll_wait_seconds={POLL_SECONDS}"
    )
    try:
        server.wait()
        results: list[tuple[float, int, object]] = []  # (time, HTTP status, prediction)
        stop = threading.Event()

        def client() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    r = s.post(f"{server.rest}/v1/models/hot:predict", json={"instances": [2.0]}, timeout=30)
                    results.append((time.monotonic(), r.status_code, r.json().get("predictions")))

        loop = threading.Thread(target=client)
        loop.start()
        try:
            time.sleep(0.5)
            # a plain recursive copy (not an atomic rename), as an operator would do it
            shutil.copytree(Path(testdata["saved_model_half_plus_three"]) / "00000123", base / "2")
            copied = time.monotonic()
            deadline = copied + 30
            while time.monotonic() < deadline and not any(p == [4.0] for _t, _s, p in results[-5:]):
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            stop.set()
            loop.join(30)
        failed = [r for r in results if r[1] != 200]
        assert not failed, failed[:5]
        switched = next(t for t, _s, p in results if p == [4.0])
        served_after = switched - copied
        load_seconds = _load_seconds(server.log, version=2)
        print(
            f"\nhot reload: version 2 served {served_after:.2f}s after the copy "
            f"(poll {POLL_SECONDS}s + load {load_seconds:.2f}s); {len(results)} requests, 0 failed"
        )
        assert served_after <= POLL_SECONDS + load_seconds + 2.0  # slack for a loaded CI machine
        assert all(p == [3.0] for t, _s, p in results if t < copied)
        assert all(p == [4.0] for t, _s, p in results if t > switched)
        states = {
            s["version"]: s["state"] for s in server.get("/v1/models/hot").json()["model_version_status"]
        }
        deadline = time.monotonic() + 10
        while states.get("1") != "END" and time.monotonic() < deadline:  # the old version is unloaded
            time.sleep(0.2)
            states = {
                s["version"]: s["state"] for s in server.get("/v1/models/hot").json()["model_version_status"]
            }
        assert states == {"1": "END", "2": "AVAILABLE"}
    finally:
        assert server.stop() == 0


def _load_seconds(log: str, version: int) -> float:
    for line in log.splitlines():
        if f"version {version} is AVAILABLE (loaded in" in line:
            return float(line.rsplit("loaded in ", 1)[1].split("s")[0])
    pytest.fail(f"no load line for version {version} in the server log")

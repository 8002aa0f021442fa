"""Without pyspark, or without Java, `--engine spark` says what to install, in one line, and exits 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ..conftest import load_fixture

# Runs the CLI with `import pyspark` failing, whether or not pyspark is installed here.
WITHOUT_PYSPARK = (
    "import sys; sys.modules['pyspark'] = None; from tfpredict.cli.main import main; "
    "sys.exit(main(sys.argv[1:]))"
)
CLI = "import sys; from tfpredict.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("missing", ["pyspark", "java"])
def test_engine_spark_says_what_to_install(missing: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if missing == "java":
        pytest.importorskip("pyspark")
    fx = load_fixture("dnn_binary")
    out = tmp_path / "out.parquet"
    args = ["predict", str(fx.export), str(fx.csv), "-o", str(out), "--engine", "spark"]
    env = dict(os.environ)
    if missing == "java":  # a JAVA_HOME without a java in it, and no java on PATH
        env["JAVA_HOME"] = str(tmp_path / "no-java")
        env["PATH"] = os.path.dirname(sys.executable)
    code = WITHOUT_PYSPARK if missing == "pyspark" else CLI
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    want = "pip install 'tfpredict[spark]'" if missing == "pyspark" else "default-jre-headless"
    assert len(lines) == 1 and want in lines[0], done.stderr
    assert not out.exists()

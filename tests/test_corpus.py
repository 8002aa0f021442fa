"""Real public SavedModel exports (tests/corpus/sources.json) predict what plain TensorFlow computes for them.

The exports themselves are not in the repo (tests/corpus/README.md says where each comes from): the corpus is
found at $TFPREDICT_CORPUS, else ../corpus or ../shared/corpus next to the repo. Every row-taking signature of
every export runs through Predictor.predict and through `tfpredict predict`, and must equal the reference in
tests/corpus/references/ (computed by tests/corpus/make_references.py with plain TensorFlow) to 1e-5, strings
exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import assert_matches

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((HERE / "sources.json").read_text())


def find_corpus() -> Path | None:
    env = os.environ.get("TFPREDICT_CORPUS")
    for c in (env, REPO.parent / "corpus", REPO.parent / "shared" / "corpus"):
        if c and Path(c).is_dir():
            return Path(c)
    return None


CORPUS = find_corpus()
if CORPUS is None:
    pytest.skip(
        "no corpus of real exports: set TFPREDICT_CORPUS or build ../corpus (see tests/corpus/README.md)",
        allow_module_level=True,
    )

EXPORTS = {e["name"]: e for e in MANIFEST["exports"]}
CASES = [
    (e["name"], sig) for e in MANIFEST["exports"] for sig, s in e["signatures"].items() if s["row_taking"]
]
IDS = [f"{name}:{sig}" for name, sig in CASES]


def export_dir(name: str) -> Path:
    return CORPUS / name / "export"  # type: ignore[operator]


def data_file(name: str) -> Path:
    return CORPUS / name / EXPORTS[name]["data_file"]  # type: ignore[operator]


def reference(name: str, sig: str) -> dict[str, list]:
    ref = json.loads((HERE / "references" / f"{name}.json").read_text())
    if sig not in ref["signatures"]:
        pytest.fail(f"no reference for {name}:{sig}: {ref['errors'].get(sig, 'not computed')}")
    return ref["signatures"][sig]


def read_table(name: str, predictor):  # type: ignore[no-untyped-def]
    """The data file as pandas: string features as text ("17031081500" stays text), only empty cells missing.

    pandas' default NA words would turn the babyweight exports' "None" category into a missing value; the
    references leave out exactly the empty cells.
    """
    import pandas as pd

    path = data_file(name)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    strings = {k: str for k, f in predictor.inputs.items() if f.dtype == "string"}
    return pd.read_csv(path, dtype=strings, keep_default_na=False, na_values=[""])


@pytest.mark.parametrize(("name", "sig"), CASES, ids=IDS)
def test_predictor_matches_reference(name: str, sig: str) -> None:
    from tfpredict import Predictor

    want = reference(name, sig)
    if not export_dir(name).is_dir():
        pytest.fail(f"{export_dir(name)} missing from the corpus")
    with Predictor.load(export_dir(name), sig) as predictor:
        got = predictor.predict(read_table(name, predictor))
    assert_matches(got, want, f"{name}:{sig}")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"), TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def cli_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], tuple[int, str, Path]]:
    """`tfpredict predict` over every selected case, four processes at a time (each pays TF's start-up)."""
    tmp = tmp_path_factory.mktemp("corpus_cli")
    selected = [
        (item.callspec.params["name"], item.callspec.params["sig"])
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_cli_matches_reference"
    ]

    def run(case: tuple[str, str]) -> tuple[tuple[str, str], tuple[int, str, Path]]:
        name, sig = case
        out = tmp / f"{name}.{sig.replace('/', '_')}.jsonl"
        cmd = [sys.executable, "-m", "tfpredict", "predict", str(export_dir(name)), str(data_file(name))]
        cmd += ["-o", str(out), "--signature", sig, "-q"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
        return case, (proc.returncode, proc.stderr, out)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, selected))


def _first_error_line(stderr: str) -> str:
    lines = [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(("WARNING: All log messages", "I0000", "W0000", "E0000"))
    ]
    return lines[-1] if lines else "(no stderr)"


@pytest.mark.parametrize(("name", "sig"), CASES, ids=IDS)
def test_cli_matches_reference(name: str, sig: str, cli_runs: dict) -> None:
    want = reference(name, sig)
    code, stderr, out = cli_runs[(name, sig)]
    assert code == 0, f"tfpredict predict exited {code}: {_first_error_line(stderr)}"
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    got = {key: [row.get(key) for row in rows] for key in want}
    assert_matches(got, want, f"{name}:{sig} (CLI)")

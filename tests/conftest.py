"""Shared fixtures: the committed Estimator exports under tests/fixtures/exports/NAME/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXPORTS = Path(__file__).parent / "fixtures" / "exports"
FIXTURES = (
    sorted(p.name for p in EXPORTS.iterdir() if (p / "expected.json").is_file()) if EXPORTS.is_dir() else []
)


class Fixture:
    def __init__(self, name: str) -> None:
        self.name = name
        self.root = EXPORTS / name
        self.export = self.root / "export"
        self.csv = self.root / "data.csv"
        meta = json.loads((self.root / "expected.json").read_text())
        self.estimator = meta.get("estimator")
        self.receiver = meta.get("receiver")
        self.expected: dict[str, list] = meta["predictions"]

    def read_csv(self, predictor):  # type: ignore[no-untyped-def]
        """pandas.read_csv, told which columns the model reads as strings (so "02134" stays "02134")."""
        import pandas as pd

        strings = {k: str for k, f in predictor.inputs.items() if f.dtype == "string"}
        return pd.read_csv(self.csv, dtype=strings)


def assert_matches(got: dict, expected: dict[str, list], context: str = "") -> None:
    """Every expected key is present and equal: numbers to 1e-5, strings exactly."""
    assert set(expected) <= set(got), f"{context}: missing outputs {set(expected) - set(got)}"
    for key, want in expected.items():
        have = np.asarray(got[key])
        want_arr = np.asarray(want)
        if have.dtype.kind in "OSU" or want_arr.dtype.kind in "OSU":
            have_s = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(
                have
            )
            assert have_s.reshape(want_arr.shape).tolist() == want_arr.tolist(), (
                f"{context}: output {key!r} differs"
            )
        else:
            np.testing.assert_allclose(
                have.reshape(want_arr.shape).astype(np.float64),
                want_arr,
                rtol=1e-5,
                atol=1e-5,
                err_msg=f"{context}: output {key!r}",
            )


@pytest.fixture(params=FIXTURES)
def fixture(request: pytest.FixtureRequest) -> Fixture:
    return Fixture(request.param)


def load_fixture(name: str) -> Fixture:
    return Fixture(name)

"""doctor works on every committed fixture export: Estimator exports with parsing receivers, a raw-receiver
Estimator export and a TF2 tf.Module (the CSVs are 50 rows: the whole input is the sample)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Fixture


def test_doctor_on_fixture(fixture: Fixture) -> None:
    from tfpredict.doctor import doctor

    d = doctor(fixture.export, fixture.csv, seconds=2.5)
    x = json.loads(json.dumps(d.to_dict()))
    assert x["bottleneck"] in ("input", "model", "output")
    assert x["sample_rows"] == 50 and x["whole_input_read"] is True
    assert all(s["rows_per_s"] > 0 for s in x["stages"].values())
    assert x["stages"]["end_to_end"]["rows"] == 50
    assert [p["batch_size"] for p in x["sweeps"]["batch_size"]][:2] == [1, 32]
    assert x["top_ops"], "the traced run found no ops"
    assert sum(x["op_categories"].values()) == pytest.approx(1, abs=1e-3)
    assert x["recommended"]["batch_size"] >= 1

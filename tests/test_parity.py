"""Predictor reproduces the recorded Estimator.predict outputs of every fixture export, on current TF."""

from __future__ import annotations

import pytest

from tfpredict import Predictor

from .conftest import Fixture, assert_matches


def test_predict_matches_estimator(fixture: Fixture) -> None:
    with Predictor.load(fixture.export) as predictor:
        got = predictor.predict(fixture.read_csv(predictor))
        assert_matches(got, fixture.expected, fixture.name)


def test_fast_path_on_parsing_exports(fixture: Fixture) -> None:
    with Predictor.load(fixture.export) as predictor:
        expected_path = "features" if fixture.receiver == "parsing" else "tensors"
        assert predictor.path == expected_path


def test_fallback_serialization_matches(fixture: Fixture) -> None:
    if fixture.receiver != "parsing":
        pytest.skip("raw receivers have no tf.Example path")
    with Predictor.load(fixture.export, fast_path=False) as predictor:
        assert predictor.path == "examples"
        assert_matches(predictor.predict(fixture.read_csv(predictor)), fixture.expected, fixture.name)


def test_arrow_and_row_dicts_give_the_same(fixture: Fixture) -> None:
    import pyarrow as pa

    with Predictor.load(fixture.export) as predictor:
        frame = fixture.read_csv(predictor)
        assert_matches(predictor.predict(pa.Table.from_pandas(frame)), fixture.expected, "arrow")
        rows = [
            {k: v for k, v in row.items() if v == v} for row in frame.to_dict("records")
        ]  # drop NaN cells
        assert_matches(predictor.predict(rows), fixture.expected, "rows")


def test_small_internal_batches_give_the_same(fixture: Fixture) -> None:
    with Predictor.load(fixture.export, batch_size=7) as predictor:
        assert_matches(predictor.predict(fixture.read_csv(predictor)), fixture.expected, fixture.name)

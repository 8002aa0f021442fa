"""BatchingParameters fields TF Serving honours and so do both batchers: pad_variable_length_inputs,
enable_large_batch_splitting with max_execution_batch_size, allowed_batch_sizes padding, the max_batch_size
bound, and the checks of a parameters file."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tfpredict.errors import UsageError
from tfpredict.serving.batch_data import group_of
from tfpredict.serving.batcher import Batcher, LoopBatcher
from tfpredict.serving.config import BatchingParameters, read_batching_parameters
from tfpredict.serving.status import ServingError


class Model:
    """Row-wise max over the inner dimension, recording each call's batch shape."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.lock = threading.Lock()

    def __call__(self, key: Any, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.shapes.append(data["x"].shape)
        return {"max": data["x"].max(axis=1), "rows": np.arange(len(data["x"]))}


def key_for(x: np.ndarray) -> tuple[Any, ...]:  # inference.tensors_call's key
    return ("tensors", "serving_default", (), (("x", x.dtype.str, x.shape[1:]),))


def test_variable_length_inputs_share_a_batch_padded_with_the_first_value() -> None:
    params = BatchingParameters(
        max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1, pad_variable_length_inputs=True
    )
    model = Model()
    batcher = Batcher(params, model)
    try:
        a, b = np.array([[1, 5, 2]]), np.array([[7, 3]])
        assert group_of(key_for(a), True) == group_of(key_for(b), True) != key_for(b)
        futures = [batcher.submit(key_for(x), {"x": x}, 1) for x in (a, b)]
        answers = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert model.shapes == [(2, 3)]  # one call, [7, 3] padded to [7, 3, 7]
    assert [int(x["max"][0]) for x in answers] == [5, 7]


def test_without_padding_unequal_inner_sizes_run_apart() -> None:
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1)
    model = Model()
    batcher = Batcher(params, model)
    try:
        futures = [batcher.submit(key_for(x), {"x": x}, 1) for x in (np.ones((1, 3)), np.ones((1, 2)))]
        [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert sorted(model.shapes) == [(1, 2), (1, 3)]


def test_large_requests_are_split_into_execution_batches_and_joined() -> None:
    params = BatchingParameters(
        max_batch_size=10,
        num_batch_threads=2,
        enable_large_batch_splitting=True,
        max_execution_batch_size=4,
        allowed_batch_sizes=(2, 4),
    )
    model = Model()
    batcher = Batcher(params, model)
    x = np.arange(27).reshape(9, 3)
    try:
        out = batcher.submit(key_for(x), {"x": x}, 9).result(timeout=10)
        with pytest.raises(ServingError, match="Task size 11 is larger than maximum input batch size 10"):
            batcher.submit(key_for(x), {"x": np.ones((11, 3))}, 11)
    finally:
        batcher.close()
    assert out["max"].tolist() == x.max(axis=1).tolist()  # the parts' answers in order
    assert out["rows"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]  # per call: 4 + 4 + 1
    assert sorted(model.shapes) == [(2, 3), (4, 3), (4, 3)]  # the last part padded to an allowed size


def test_the_loop_batcher_splits_too() -> None:
    params = BatchingParameters(
        max_batch_size=10, enable_large_batch_splitting=True, max_execution_batch_size=3, num_batch_threads=2
    )
    model = Model()

    async def main() -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()

        def call(loop: Any, key: Any, data: Any) -> asyncio.Future[Any]:
            f = loop.create_future()
            f.set_result(model(key, data))
            return f

        batcher = LoopBatcher(params, call)
        x = np.arange(21).reshape(7, 3)
        return await batcher.submit(key_for(x), {"x": x}, 7, loop)  # type: ignore[no-any-return]

    out = asyncio.run(main())
    assert out["max"].tolist() == [2, 5, 8, 11, 14, 17, 20]
    assert sorted(model.shapes) == [(1, 3), (3, 3), (3, 3)]


def test_parameter_files_are_checked_as_tf_serving_checks_them(tmp_path: Path) -> None:
    path = tmp_path / "batching.pbtxt"
    path.write_text(
        "max_batch_size { value: 64 }\nenable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 16 }\nallowed_batch_sizes: [8, 16]\n"
        "pad_variable_length_inputs: true\n"
    )
    params = read_batching_parameters(str(path))
    assert (params.execution_limit, params.pad_variable_length_inputs) == (16, True)
    path.write_text("max_batch_size { value: 64 }\nallowed_batch_sizes: [8, 16]\n")
    with pytest.raises(UsageError, match=r"must increase and end with max_batch_size \(64\)"):
        read_batching_parameters(str(path))
    path.write_text(
        "max_batch_size { value: 64 }\nenable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 16 }\nallowed_batch_sizes: [8, 32]\n"
    )
    with pytest.raises(UsageError, match=r"end with max_execution_batch_size \(16\)"):
        read_batching_parameters(str(path))

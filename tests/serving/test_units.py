"""In-process checks of the serving pieces a server test cannot pin down exactly: batch merging, padding and
splitting, config parsing and version policies, JSON and TensorProto conversions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from tfpredict.errors import UsageError
from tfpredict.serving import json_codec, proto_codec
from tfpredict.serving.batcher import Batcher
from tfpredict.serving.config import (
    BatchingParameters,
    VersionPolicy,
    parse_model_config_text,
    read_batching_parameters,
)
from tfpredict.serving.status import ServingError


def test_batcher_merges_pads_to_allowed_sizes_and_splits() -> None:
    seen: list[int] = []

    def run(key, data):  # type: ignore[no-untyped-def]
        seen.append(len(data["x"]))
        return {"y": data["x"] * 2, "scalar": np.float32(1.0)}

    params = BatchingParameters(
        max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1, allowed_batch_sizes=(2, 8)
    )
    b = Batcher(params, run)
    try:
        futures = [b.submit("k", {"x": np.array([i, i + 100], dtype=np.float32)}, 2) for i in range(3)]
        results = [f.result(5) for f in futures]
    finally:
        b.close()
    assert seen == [8]  # 6 rows merged, padded to the allowed size 8
    for i, r in enumerate(results):
        assert r["y"].tolist() == [2 * i, 2 * (i + 100)]
        assert r["scalar"] == 1.0


def test_batcher_keeps_keys_apart_and_fails_every_task_of_a_failed_batch() -> None:
    def run(key, data):  # type: ignore[no-untyped-def]
        if key == "bad":
            raise ValueError("boom")
        return {"n": np.array([len(data)] * len(data))}

    b = Batcher(BatchingParameters(max_batch_size=4, batch_timeout_micros=100_000, num_batch_threads=1), run)
    try:
        good = [b.submit("good", [{"a": 1}], 1) for _ in range(2)]
        bad = [b.submit("bad", [{"a": 1}], 1) for _ in range(2)]
        assert [f.result(5)["n"].tolist() for f in good] == [[2], [2]]
        for f in bad:
            with pytest.raises(ValueError, match="boom"):
                f.result(5)
    finally:
        b.close()


def test_batcher_sheds_load_when_the_queue_is_full() -> None:
    release = threading.Event()

    def run(key, data):  # type: ignore[no-untyped-def]
        release.wait(5)
        return {"y": np.zeros(len(data))}

    b = Batcher(BatchingParameters(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1), run)
    try:
        first = b.submit("k", [1, 2], 2)  # taken at once, blocks in run
        time.sleep(0.1)
        second = b.submit("k", [1, 2], 2)  # queued: the queue now holds 2 rows, its limit
        with pytest.raises(ServingError) as info:
            b.submit("k", [1], 1)
        assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.http_status == 429
        release.set()
        assert len(first.result(5)["y"]) == 2 and len(second.result(5)["y"]) == 2
    finally:
        release.set()
        b.close()


def test_model_config_policies_and_labels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    configs = parse_model_config_text(
        """model_config_list {
          config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 2 versions: 5 } }
                   version_labels { key: "stable" value: 2 } version_labels { key: "canary" value: 5 } }
          config { name: "b" base_path: "/m/b" model_version_policy { latest { num_versions: 2 } } }
          config { name: "c" base_path: "/m/c" model_version_policy { all {} } }
          config { name: "d" base_path: "/m/d" }
        }"""
    )
    a, b, c, d = configs
    assert a.labels == {"stable": 2, "canary": 5}
    assert a.policy.select([1, 2, 3, 5]) == [2, 5]
    assert b.policy.select([1, 2, 3]) == [2, 3]
    assert c.policy.select([3, 1]) == [1, 3]
    assert d.policy == VersionPolicy() and d.policy.select([1, 7, 3]) == [7]
    with pytest.raises(UsageError, match="configured twice"):
        parse_model_config_text(
            'model_config_list { config { name: "a" base_path: "/x" } config { name: "a" base_path: "/y" } }'
        )
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 6\n")
    with pytest.raises(UsageError, match="allowed_batch_sizes"):
        read_batching_parameters(str(bad))
    bad.write_text("max_batch_sise { value: 8 }")
    with pytest.raises(UsageError, match="Error parsing text-format tensorflow.serving.BatchingParameters"):
        read_batching_parameters(str(bad))


def test_json_outputs_bytes_as_b64_and_non_finite_floats_bare() -> None:
    out = {"img_bytes": np.array([b"\x00\xff"], dtype=object), "label": np.array([b"cat"], dtype=object)}
    assert (
        json_codec.encode_predict(out, "row")
        == b'{"predictions":[{"img_bytes":{"b64":"AP8="},"label":"cat"}]}'
    )
    nan = {"y": np.array([np.nan, np.inf, -np.inf, 0.5], dtype=np.float32)}
    assert json_codec.encode_predict(nan, "columnar") == b'{"outputs":[NaN,Infinity,-Infinity,0.5]}'
    assert (
        json_codec.encode_predict({"y": np.array([[0.2, 3.0]], dtype=np.float32)}, "row")
        == b'{"predictions":[[0.2,3.0]]}'
    )


def test_json_inputs_b64_and_types() -> None:
    arr = json_codec.decode_instances([{"b64": "aGVsbG8="}, "plain"], {"s": "string"})["s"]
    assert arr.tolist() == [b"hello", b"plain"]
    assert (
        json_codec.decode_inputs({"a": [[1, 2]], "b": [1.5]}, {"a": "int64", "b": "float32"})["a"].dtype
        == np.int64
    )
    with pytest.raises(ServingError, match="is not of expected type: int64"):
        json_codec.decode_inputs([1.5], {"a": "int64"})
    with pytest.raises(ServingError, match="Missing named input: b"):
        json_codec.decode_inputs({"a": [1]}, {"a": "int64", "b": "int64"})
    rows = json_codec.decode_examples(
        {"context": {"c": "x"}, "examples": [{"a": 1.0}, {"a": 2.0, "c": "y"}]}, "classify"
    )
    assert rows == [{"c": "x", "a": 1.0}, {"c": "y", "a": 2.0}]


def test_tensor_proto_round_trip() -> None:
    from tensorflow.core.framework import tensor_pb2

    for arr in (
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([[1, 2]], dtype=np.int64),
        np.array([True, False]),
        np.array([b"a", b"bc"], dtype=object),
        np.array([1.5, 2.5], dtype=np.float16),
    ):
        t = tensor_pb2.TensorProto()
        proto_codec.from_ndarray(arr, t)
        back = proto_codec.to_ndarray(t)
        assert back.shape == arr.shape and back.tolist() == arr.tolist()
    packed = tensor_pb2.TensorProto(dtype=1, tensor_content=np.arange(4, dtype=np.float32).tobytes())
    packed.tensor_shape.dim.add().size = 4
    assert proto_codec.to_ndarray(packed).tolist() == [0, 1, 2, 3]
    filled = tensor_pb2.TensorProto(dtype=1, float_val=[7.0])
    filled.tensor_shape.dim.add().size = 3
    assert proto_codec.to_ndarray(filled).tolist() == [7.0, 7.0, 7.0]


def test_rest_timeout_answers_504() -> None:
    import asyncio
    from types import SimpleNamespace

    from tfpredict.savedmodel import SignatureInfo, TensorInfo
    from tfpredict.serving.metrics import Metrics
    from tfpredict.serving.rest import RestApi

    sig = SignatureInfo(
        "serving_default",
        "tensorflow/serving/predict",
        {"x": TensorInfo("x", "float32", (None,), "x:0")},
        {"y": TensorInfo("y", "float32", (None,), "y:0")},
    )

    class Servable:
        version = 1
        predictor = SimpleNamespace(signatures={"serving_default": sig}, path_for=lambda name: "tensors")

        def __enter__(self) -> Servable:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    class SlowService:
        executor = None
        request_log = None  # InferenceService's: no model samples its requests
        cache = None  # nor is any answer cached (--response_cache_bytes 0)
        method_name_check = False  # nor checks signature method names

        def servable(self, spec: object) -> Servable:
            return Servable()

        finished = False

        async def run(self, servable: object, call: object, cached: bool = True) -> dict:
            await asyncio.sleep(5)
            SlowService.finished = True
            return {}

    api = RestApi(SlowService(), Metrics(), None, timeout_ms=50)  # type: ignore[arg-type]

    async def answer() -> tuple[int, bytes, bool]:
        reply = api.handle("POST", "/v1/models/m:predict", b'{"instances": [1.0]}')
        assert not isinstance(reply, tuple)  # a prediction is awaited (nothing is cached)
        status, body, _ = await reply
        return status, body, SlowService.finished

    status, body, service_finished = asyncio.run(answer())
    assert status == 504 and b"did not finish within 50 ms" in body
    assert not service_finished  # answered at the timeout, while the call was still running


def test_window_updates_owed_for_our_data_never_count_as_a_flood() -> None:
    """grpcio answers each DATA frame with a stream and a connection WINDOW_UPDATE: at tens of thousands of
    calls a second that is far past the bucket's rate, and must not get GOAWAY ENHANCE_YOUR_CALM."""
    from tfpredict.serving.h2_flood import FloodGuard, FloodLimits

    guard = FloodGuard(FloodLimits(window_update=(10, 0.0)))  # no refill with time: only what is earned
    assert all(guard.allow("window_update") for _ in range(10))
    assert not guard.allow("window_update")  # unearned: a flood
    for _ in range(3):
        guard.sent_data()
    assert all(guard.allow("window_update") for _ in range(6))  # two per DATA frame we sent
    assert not guard.allow("window_update")


def test_memory_budget_charges_only_bytes_past_each_allowance() -> None:
    """Random grow/shrink/backlog/close steps on three accounts: the budget's `used` is always the sum of
    each account's bytes past its free allowance, and a grow is refused exactly when it would overrun."""
    import random

    from tfpredict.serving.memory import MemoryBudget

    rng = random.Random(7)
    for _ in range(500):
        budget = MemoryBudget(
            limit_bytes=rng.choice([1000, 5000, 10**6]), allowance=rng.choice([0, 100, 1000])
        )
        accounts = [budget.account() for _ in range(3)]
        held = [[0, 0] for _ in accounts]  # (request, backlog) as the arithmetic says

        def charge(request: int, backlog: int, allowance: int = budget.allowance) -> int:
            return max(0, request + backlog - allowance)

        for _ in range(50):
            i = rng.randrange(3)
            account, mine = accounts[i], held[i]
            op = rng.random()
            if op < 0.5:
                n = rng.randrange(800)
                used = sum(charge(*h) for h in held)
                grows = charge(mine[0] + n, mine[1]) - charge(*mine)
                fits = not (grows > 0 and used + grows > budget.limit)
                assert account.grow_request(n) == fits
                mine[0] += n if fits else 0
            elif op < 0.8:
                n = rng.randrange(800)
                account.shrink_request(n)
                mine[0] = max(0, mine[0] - n)
            elif op < 0.95:
                mine[1] = rng.randrange(1500)
                account.set_backlog(mine[1])
            else:
                account.close()
                mine[0] = mine[1] = 0
            assert budget.used == sum(charge(*h) for h in held)
            assert [(a.request, a.backlog) for a in accounts] == [tuple(h) for h in held]


def test_deadlines_time_out_late_calls_and_pass_other_cancellations_through() -> None:
    """Deadlines (--rest_api_timeout_in_ms without a timer per request): a call that ends in time gives
    its result, one past the deadline TimeoutError within a sweep interval (and is itself cancelled), and
    a request cancelled for another reason (its client went away) sees CancelledError, not a timeout."""
    import asyncio

    from tfpredict.serving.deadlines import Deadlines

    deadlines = Deadlines(0.05)
    cancelled: list[str] = []

    async def work(seconds: float, name: str) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return name

    async def main() -> None:
        assert await deadlines.run(work(0.001, "quick")) == "quick"
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await deadlines.run(work(5, "late"))
        assert 0.05 <= time.monotonic() - start < 0.5
        assert cancelled == ["late"]
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0  # the timeout's cancel is undone
        gone = asyncio.get_running_loop().create_task(deadlines.run(work(5, "gone")))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert cancelled == ["late", "gone"]
        many = await asyncio.gather(*(deadlines.run(work(0.001 * i, str(i))) for i in range(50)))
        assert many == [str(i) for i in range(50)]
        await asyncio.sleep(0.12)
        assert not deadlines.sweeping  # no request running: the sweep has stopped

    asyncio.run(main())


def test_the_response_caches_bound_holds_for_the_heap_its_entries_take() -> None:
    """orjson's bytes keep the 4 KB buffer they were written in: kept as they are, 2,000 small answers
    charged ~1 MB would take ~9 MB of heap. The cache keeps exact copies, so the bound is the heap's."""
    import tracemalloc

    import orjson

    from tfpredict.serving.metrics import Metrics
    from tfpredict.serving.response_cache import ResponseCache

    class Version:  # what the cache asks of a Servable: its name, version, and a memo
        name, version = "m", 1

        def __init__(self) -> None:
            self.memos: dict[object, object] = {}

        def memo(self, key: object, make: Callable[[], object]) -> object:
            if key not in self.memos:
                self.memos[key] = make()
            return self.memos[key]

    cache, version = ResponseCache(10 << 20, Metrics()), Version()
    keys = [cache.body_key(version, "classify", b'{"x": %d}' % i) for i in range(2000)]

    def answer(i: int) -> bytes:
        return orjson.dumps({"results": [[["0", i / 7], ["1", 1 - i / 7]]]})

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, key in enumerate(keys):
            assert key is not None
            cache.put_body(key, "m", answer(i))  # as the server does: the cache holds the only reference
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == 2000
    assert taken <= cache.bytes  # the heap the entries took is within what they were charged
    assert cache.get_body(keys[5], "m") == answer(5)

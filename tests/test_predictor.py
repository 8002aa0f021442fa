"""Predictor behaviour beyond parity: errors, missing values, threads, single rows, inspect."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tfpredict import InputError, ModelLoadError, Predictor

from .conftest import EXPORTS, assert_matches, load_fixture

DNN = load_fixture("dnn_binary")


@pytest.fixture(scope="module")
def dnn() -> Predictor:
    predictor = Predictor.load(DNN.export)
    yield predictor
    predictor.close()


def test_base_dir_takes_highest_version(tmp_path) -> None:
    import shutil

    version = next(DNN.export.iterdir())
    shutil.copytree(version, tmp_path / "7")
    shutil.copytree(version, tmp_path / "12")
    (tmp_path / "99-not-a-version").mkdir()
    with Predictor.load(tmp_path) as predictor:
        assert predictor.version == 12
        assert predictor.export_dir == tmp_path / "12"


def test_inputs_are_the_parsed_features(dnn: Predictor) -> None:
    assert "examples" not in dnn.inputs
    assert set(dnn.inputs) >= {"age", "color"}
    kinds = {spec.kind for spec in dnn.inputs.values()}
    assert kinds <= {"dense", "varlen"}
    assert "predict" in dnn.signatures and dnn.signature == "predict"


def _frame(dnn: Predictor):
    return DNN.read_csv(dnn)


def test_missing_required_column(dnn: Predictor) -> None:
    required = [k for k, f in dnn.inputs.items() if f.required]
    assert required, "dnn_binary should have a required dense feature"
    frame = _frame(dnn).drop(columns=[required[0]])
    with pytest.raises(InputError, match=required[0]):
        dnn.predict(frame)


def test_string_in_float_column_names_row_and_feature(dnn: Predictor) -> None:
    name = next(k for k, f in dnn.inputs.items() if f.kind == "dense" and f.dtype == "float32")
    frame = _frame(dnn)
    frame[name] = frame[name].astype(object)
    frame.loc[3, name] = "abc"
    with pytest.raises(InputError, match=rf"Row 3: feature '{name}' expects float32, found 'abc'"):
        dnn.predict(frame)


def test_wrong_shape(dnn: Predictor) -> None:
    name = next(k for k, f in dnn.inputs.items() if f.kind == "dense")
    rows = _frame(dnn).head(2)
    data = {k: rows[k].tolist() for k in rows.columns}
    data[name] = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    with pytest.raises(InputError, match=name):
        dnn.predict(data)


def test_missing_required_value(dnn: Predictor) -> None:
    name = next(k for k, f in dnn.inputs.items() if f.required)
    frame = _frame(dnn)
    frame.loc[5, name] = None
    with pytest.raises(InputError, match=rf"Row 5: feature '{name}' is missing"):
        dnn.predict(frame)


def test_not_a_saved_model(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="Not a SavedModel"):
        Predictor.load(tmp_path)
    with pytest.raises(ModelLoadError, match="No such export"):
        Predictor.load(tmp_path / "nope")
    (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage\xff")
    with pytest.raises(ModelLoadError, match="saved"):
        Predictor.load(tmp_path)


def test_no_such_signature() -> None:
    with pytest.raises(ModelLoadError, match="No signature 'nope'.*predict"):
        Predictor.load(DNN.export, signature="nope")


def test_unknown_output(dnn: Predictor) -> None:
    with pytest.raises(InputError, match="Unknown output"):
        dnn.predict(_frame(dnn), outputs=["nope"])


def test_single_row_dict_of_scalars(dnn: Predictor) -> None:
    frame = _frame(dnn)
    row = {k: (v if v == v else None) for k, v in frame.iloc[2].to_dict().items()}  # NaN: a missing value
    got = dnn.predict(row)
    want = {k: [v[2]] for k, v in DNN.expected.items()}
    assert_matches(got, want, "single row")


def test_output_selection(dnn: Predictor) -> None:
    got = dnn.predict(_frame(dnn), outputs=["probabilities"])
    assert list(got) == ["probabilities"]
    assert_matches(got, {"probabilities": DNN.expected["probabilities"]})


def test_empty_input(dnn: Predictor) -> None:
    got = dnn.predict(_frame(dnn).head(0))
    assert all(len(v) == 0 for v in got.values())


def test_concurrent_callers_get_their_own_answers(dnn: Predictor) -> None:
    frame = _frame(dnn)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(20):
                idx = np.sort(rng.choice(len(frame), size=rng.integers(1, len(frame)), replace=False))
                got = dnn.predict(frame.iloc[idx])
                want = {k: [v[i] for i in idx] for k, v in DNN.expected.items()}
                assert_matches(got, want, f"thread {seed}")
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_threading_options() -> None:
    with Predictor.load(DNN.export, intra_op_threads=1, inter_op_threads=2) as predictor:
        config = predictor.session_config
        assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (1, 2)
        assert_matches(predictor.predict(DNN.read_csv(predictor)), DNN.expected)
    with Predictor.load(DNN.export) as predictor:  # None leaves TensorFlow's choice (0: all cores)
        config = predictor.session_config
        assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (0, 0)


def test_inspect_cli_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tfpredict", "inspect", str(DNN.export), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["path"] == "features"
    assert info["default_signature"] == "predict"
    assert "examples" in info["signatures"]["predict"]["inputs"]
    assert "age" in info["signatures"]["predict"]["features"]
    assert out.stderr == ""


def test_inspect_cli_error_is_one_line(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tfpredict", "inspect", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "Not a SavedModel" in out.stderr and "Traceback" not in out.stderr


def test_fixture_exports_exist() -> None:
    assert (EXPORTS / "dnn_binary" / "expected.json").is_file()


def test_xla_gives_the_same_answers_and_compiles(dnn: Predictor) -> None:
    with Predictor.load(DNN.export, xla=True) as predictor:
        assert_matches(predictor.predict(DNN.read_csv(predictor)), DNN.expected, "xla")
        assert predictor.xla_clusters(DNN.read_csv(predictor).head(4)) > 0
    assert dnn.xla_clusters(DNN.read_csv(dnn).head(4)) == 0  # loaded without xla


def test_predict_files_reports_xla(tmp_path) -> None:
    from tfpredict import predict_files

    result = predict_files(DNN.export, [DNN.csv], tmp_path / "out.parquet", xla=True)
    assert result.rows == len(DNN.expected["logits"])
    assert result.xla_clusters and result.xla_clusters > 0
    assert predict_files(DNN.export, [DNN.csv], tmp_path / "plain.parquet").xla_clusters is None


def test_serialized_input_for(dnn: Predictor) -> None:
    assert dnn.serialized_input_for("predict") == "examples"
    assert dnn.serialized_input_for("serving_default") == "inputs"
    raw = load_fixture("custom_multihead_raw")
    with Predictor.load(raw.export) as predictor:
        assert predictor.serialized_input_for() is None


# ---------------------------------------------------------------- internal batches: overlap, order, errors
class _ThreadRecorder(Predictor):
    """A real Predictor that notes, at each model call, its thread and whether a helper thread exists."""

    def predict_feeds(self, feeds, *, outputs=None):  # type: ignore[no-untyped-def]
        helpers = [t.name for t in threading.enumerate() if t.name.startswith("tfpredict-")]
        self.calls.append((threading.current_thread().name, bool(helpers)))
        return super().predict_feeds(feeds, outputs=outputs)


@pytest.mark.parametrize("batch_size", [1, 7, 16, 49, 50])
def test_batches_give_the_rows_answers_in_input_order(batch_size: int) -> None:
    with Predictor.load(DNN.export, batch_size=batch_size) as predictor:
        assert_matches(predictor.predict(DNN.read_csv(predictor)), DNN.expected, f"batch_size={batch_size}")


def test_one_batch_has_no_helper_thread_and_more_run_the_model_in_three() -> None:
    me = threading.current_thread().name
    with _ThreadRecorder.load(DNN.export, batch_size=64) as predictor:
        predictor.calls = []
        frame = DNN.read_csv(predictor)
        predictor.predict(frame)  # 50 rows: one batch, no helper thread
        assert predictor.calls == [(me, False)]
        predictor.batch_size = 16
        predictor.calls = []
        assert_matches(predictor.predict(frame), DNN.expected)  # 4 batches
        threads = {thread for thread, _ in predictor.calls}
        assert len(predictor.calls) == 4 and 1 <= len(threads) <= 3  # the model: at most three helper threads
        assert all(thread.startswith("tfpredict-model") for thread in threads)
    assert not [t for t in threading.enumerate() if t.name.startswith("tfpredict-")]  # none left behind


@pytest.mark.parametrize("bad_row", [3, 9, 21, 49])
def test_a_bad_row_in_any_batch_is_named_by_its_row_in_the_input(bad_row: int) -> None:
    with Predictor.load(DNN.export, batch_size=4) as predictor:
        frame = DNN.read_csv(predictor)
        frame["age"] = frame["age"].astype(object)
        frame.loc[bad_row, "age"] = "abc"
        with pytest.raises(InputError, match=rf"^Row {bad_row}: feature 'age' expects float32, found 'abc'$"):
            predictor.predict(frame)
        frame = DNN.read_csv(predictor)
        frame.loc[bad_row, "age"] = None
        with pytest.raises(
            InputError, match=rf"^Row {bad_row}: feature 'age' is missing and has no default$"
        ):
            predictor.predict(frame)


def test_overlapped_raises_the_first_failure_in_loop_order() -> None:
    from tfpredict._batches import overlapped

    events: list[str] = []

    def prepare(i: int) -> int:
        events.append(f"prepare {i}")
        if i == 2:
            raise ValueError("prepare 2")
        return i

    def call(i: int) -> int:
        if i == 1:
            raise KeyError("call 1")
        events.append(f"call {i}")
        return i * 10

    # call 1 fails while prepare 2 runs (and fails too): a loop would have stopped at call 1
    with pytest.raises(KeyError, match="call 1"):
        overlapped([0, 1, 2, 3], prepare, call)
    assert "prepare 3" not in events
    events.clear()
    # prepare 2 fails: raised only once calls 0 and 3 (which ran meanwhile) are done, nothing after it runs
    with pytest.raises(ValueError, match="prepare 2") as raised:
        overlapped([0, 3, 2, 4], prepare, call)
    assert "call 0" in events and "call 3" in events and "prepare 4" not in events
    assert raised.value.__context__ is None  # raised as itself, not while handling another error
    # a call fails while a later one fails too: the earlier one is raised, calls not yet started never run
    with pytest.raises(KeyError, match="call 1"):
        overlapped([5, 1, 6, 1, 7, 8, 9], prepare, call)
    events.clear()
    with pytest.raises(KeyError, match="call 1"):
        overlapped([1, 0, 3, 4, 5, 6, 7, 8], prepare, call)
    assert sum(e.startswith("call") for e in events) <= 3  # at most the two in flight and one ready
    assert overlapped([0, 3, 4], prepare, call) == [0, 30, 40]
    threads: list[tuple[str, str]] = []
    overlapped(
        [0, 1, 2],
        lambda i: threads.append(("prepare", threading.current_thread().name)) or i,
        lambda i: threads.append(("call", threading.current_thread().name)) or i,
    )
    me = threading.current_thread().name
    assert [t for what, t in threads if what == "prepare"] == [me] * 3
    assert all(t.startswith("tfpredict-model") for what, t in threads if what == "call")
    assert overlapped([], prepare, call) == []
    assert overlapped([4], prepare, call) == [40]


def test_overlapped_keeps_two_calls_in_flight_and_the_results_in_input_order() -> None:
    from tfpredict._batches import overlapped

    both = threading.Barrier(2, timeout=10)  # broken (an error) unless two calls run at the same time

    def call(i: int) -> int:
        if i < 2:
            both.wait()
        if i == 2:
            time.sleep(0.05)  # finishes after call 3: the results still come back in input order
        return i * 10

    assert overlapped(list(range(6)), lambda i: i, call) == [0, 10, 20, 30, 40, 50]
    assert overlapped(list(range(3)), lambda i: i, lambda i: i, in_flight=1) == [0, 1, 2]


# ---------------------------------------------------------------- one row, every form
def _one_row_forms(predictor: Predictor, i: int) -> dict:
    import pyarrow as pa

    frame = DNN.read_csv(predictor)
    one = frame.iloc[[i]]
    scalars = {k: (v if v == v else None) for k, v in frame.iloc[i].to_dict().items()}
    return {
        "dict of scalars": scalars,
        "dict of one-element lists": one.to_dict("list"),
        "dict of one-element arrays": {k: np.asarray(v) for k, v in one.to_dict("list").items()},
        "one-row DataFrame": one,
        "one-row Arrow Table": pa.Table.from_pandas(one, preserve_index=False),
        "one-row Arrow RecordBatch": pa.RecordBatch.from_pandas(one, preserve_index=False),
        "list of one row dict": [scalars],
    }


@pytest.mark.parametrize("i", [0, 1, 2])  # rows with a missing float (default), a missing string, none
def test_one_row_in_every_form_gives_its_answer(dnn: Predictor, i: int) -> None:
    want = {k: [v[i]] for k, v in DNN.expected.items()}
    for form, data in _one_row_forms(dnn, i).items():
        assert_matches(dnn.predict(data), want, form)


def test_one_row_errors_are_the_same_in_every_form(dnn: Predictor) -> None:
    for form, data in _one_row_forms(dnn, 2).items():
        if isinstance(data, dict):
            one = {"lists": ["abc"], "arrays": np.asarray(["abc"], dtype=object)}
            data = dict(data, age=one.get(form.rsplit(" ", 1)[-1], "abc"))
        elif isinstance(data, list):
            data = [dict(data[0], age="abc")]
        elif hasattr(data, "iloc"):
            data = data.assign(age=["abc"])
        else:
            data = data.set_column(data.schema.get_field_index("age"), "age", [["abc"]])
        with pytest.raises(InputError, match=r"^Row 0: feature 'age' expects float32, found 'abc'$"):
            dnn.predict(data)
    with pytest.raises(InputError, match=r"^Missing column 'city' needed by the model"):
        dnn.predict({"age": [30.0], "hours": [1.0], "color": ["red"], "zip": ["02134"]})


def test_one_row_with_a_list_cell_is_one_row(dnn: Predictor) -> None:
    row = {"age": 30.2, "hours": 23.9, "color": ["blue"], "city": ["perth"], "zip": ["02134"]}
    want = {k: [v[2]] for k, v in DNN.expected.items()}
    assert_matches(dnn.predict([row]), want, "list cells of one value")
    two = dict(row, color=["blue", "red"])  # a var-len cell of two values: still one row
    assert len(dnn.predict([two])["logits"]) == 1


def test_an_int_a_float32_feature_cannot_hold_names_its_row_in_every_form(dnn: Predictor) -> None:
    import pandas as pd

    row = {"age": 2**24 + 1, "hours": 23.9, "color": "blue", "city": "perth", "zip": "02134"}
    message = rf"^Row 0: feature 'age' expects float32, found {2**24 + 1}$"
    for data in (row, [row], pd.DataFrame([row]), {k: [v] for k, v in row.items()}):
        with pytest.raises(InputError, match=message):
            dnn.predict(data)
    assert len(dnn.predict(dict(row, age=2**24))["logits"]) == 1

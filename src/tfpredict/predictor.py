"""Predictor: load an export once, predict from tables, fast, with the export's own answers."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from . import features as F
from ._batches import overlapped, rows_from
from .calls import as_feed, op_type, prediction_error
from .errors import InputError, ModelLoadError, PredictionError
from .features import FeatureSpec, SparseValue
from .savedmodel import (
    CsvSpec,
    FunctionSignatures,
    ParseSpec,
    SignatureInfo,
    find_csv_spec,
    find_parse_spec,
    load_session,
    resolve_export_dir,
    signatures_of,
    unrestored_variables,
)
from .savedmodel import (
    session_config as make_session_config,
)

log = logging.getLogger(__name__)

#: Rows per model call, for every engine. Measured on a 2-core machine with a 256/128/64 DNNClassifier
#: (benchmarks/batch.py): rows/s rises steeply up to ~4k rows and is flat beyond 8k, while memory in flight
#: grows with it.
DEFAULT_BATCH_SIZE = 8192


class CallPath(str, Enum):
    """How a signature is called. A str, so it compares, prints and goes into JSON as its value."""

    FEATURES = "features"  # parsed features fed straight past ParseExample: no tf.Example is ever built
    EXAMPLES = "examples"  # fallback: rows serialized to tf.Example, then the signature as exported
    TENSORS = "tensors"  # a raw signature: its own input tensors are fed

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class NodeTime:
    """One graph node's time in a traced model call (see Predictor.trace)."""

    name: str
    op_type: str
    ms: float


@dataclass
class Feeds:
    """Converted input rows for one signature, ready for the model (see Predictor.convert)."""

    signature: str
    num_rows: int
    values: list[Any]  # flat, in the order of the plan's feed tensors


class _Plan:
    """How one signature is called: which path, which features, which tensors are fed."""

    def __init__(self, signature: SignatureInfo, parse: ParseSpec | None, fast_path: bool) -> None:
        self.signature = signature
        self.parse = parse
        if parse is not None and parse.prunable and fast_path:
            self.path = CallPath.FEATURES
        elif parse is not None:
            self.path = CallPath.EXAMPLES
            if fast_path:
                log.info("signature %s: fast path unavailable (%s)", signature.name, parse.why_not)
        else:
            self.path = CallPath.TENSORS
        self.parse_op = parse.op_type if parse is not None else ""
        if parse is not None:
            self.features: dict[str, FeatureSpec] = dict(parse.features)
        else:
            self.features = {
                k: FeatureSpec(k, v.dtype, tuple(v.shape[1:]) if v.shape else (), "tensor")
                for k, v in signature.inputs.items()
            }

    def feed_tensors(self) -> list[str]:
        if self.path == CallPath.FEATURES:
            assert self.parse is not None
            names: list[str] = []
            for key in self.features:
                if key in self.parse.sparse:
                    s = self.parse.sparse[key]
                    names += [s.indices, s.values, s.dense_shape]
                else:
                    names.append(self.parse.dense[key])
            return names
        if self.path == CallPath.EXAMPLES:
            assert self.parse is not None
            return [self.signature.inputs[self.parse.serialized_input].tensor_name]
        return [self.signature.inputs[k].tensor_name for k in self.features]


class Predictor:
    """A loaded export. Thread-safe: one Predictor serves concurrent `predict` calls from many threads
    (TensorFlow sessions run concurrently and release the GIL while they compute)."""

    allow_missing: F.AllowMissing = ()  # predict()'s default: no column may be absent
    assemble: dict[str, str | Sequence[str]] = {}  # noqa: RUF012 - replaced, never mutated

    def __init__(
        self,
        export_dir: Path,
        graph: Any,
        session: Any,
        signatures: dict[str, SignatureInfo],
        signature: str,
        batch_size: int,
        fast_path: bool,
    ) -> None:
        self.export_dir = export_dir
        self.version = int(export_dir.name) if export_dir.name.isdigit() else None
        self.signatures = signatures
        self.signature = signature
        self.batch_size = batch_size
        self._graph = graph
        self._session = session
        self._functions: FunctionSignatures | None = None  # set when a graph session cannot run the export
        self._fast_path = fast_path
        self.tags: list[str] = []  # the tag set loaded
        self.producer = ""  # the TensorFlow version that wrote the export ("" when it does not say)
        self.rewrites: list[str] = []  # legacy ops replaced by current ones at load (legacy_ops.py)
        self.inlined: list[str] = []  # function calls spliced into the graph to reach a parse op (inline.py)
        self._plans: dict[str, _Plan] = {}
        self._csv_specs: dict[str, CsvSpec | None] = {}
        self._callables: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        signature: str | None = None,
        *,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        xla: bool = False,
        session_config: Any = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fast_path: bool = True,
        tags: list[str] | None = None,
        allow_missing: F.AllowMissing = (),
        assemble: F.Assemble | None = None,
    ) -> Predictor:
        """Load a SavedModel version directory, or the highest numeric version of a base directory.

        signature: the default for predict(); by default "predict" (what Estimator.predict returns)
        when the export has it, else "serving_default", else the only one. Threads: TensorFlow's
        intra-op (inside one op) and inter-op (ops side by side) pools; None leaves TF's choice (all cores).
        tags: the meta graph's tag set (TF Serving's --saved_model_tags); by default the serving one.
        allow_missing, assemble: the defaults of predict()'s and convert()'s arguments of the same names.
        session_config: a tf.compat.v1.ConfigProto the session starts from (TF Serving's
        --tensorflow_session_config_file); the thread and xla arguments override its fields.
        """
        export_dir = resolve_export_dir(path)
        config = make_session_config(intra_op_threads, inter_op_threads, xla, base=session_config)
        loaded = load_session(export_dir, config, tags)
        graph, session = loaded.graph, loaded.session
        signatures = signatures_of(loaded.meta, graph)
        if not signatures:
            session.close()
            raise ModelLoadError(f"SavedModel {export_dir} has no signatures to call")
        chosen = signature or _default_signature(signatures)
        if chosen not in signatures:
            session.close()
            raise ModelLoadError(
                f"No signature {chosen!r} in {export_dir}; it has: {', '.join(sorted(signatures))}"
            )
        predictor = cls(export_dir, graph, session, signatures, chosen, batch_size, fast_path)
        predictor.tags = loaded.tags
        predictor.producer = loaded.producer
        predictor.rewrites = loaded.rewrites
        predictor.inlined = loaded.inlined
        predictor.allow_missing = allow_missing if isinstance(allow_missing, bool) else tuple(allow_missing)
        predictor.assemble = dict(assemble or {})
        missing = unrestored_variables(graph, session)
        if missing:
            log.info(
                "%s: %d variables not restored by a graph session; calling TF2 functions",
                export_dir,
                len(missing),
            )
            predictor._functions = FunctionSignatures(export_dir)
        predictor._plan(chosen)  # fail at load, not at the first call, if the signature is unusable
        F.check_assemble(predictor.inputs, predictor.assemble)
        return predictor

    # ---------------------------------------------------------------- what the model wants and gives
    @property
    def inputs(self) -> dict[str, FeatureSpec]:
        """The features a caller supplies for the default signature (parsed features, not `examples`)."""
        return dict(self._plan(self.signature).features)

    @property
    def outputs(self) -> list[str]:
        return list(self.signatures[self.signature].outputs)

    @property
    def path(self) -> CallPath:
        """How the default signature is called: "features", "examples" or "tensors"."""
        return self._plan(self.signature).path

    @property
    def session_config(self) -> Any:
        """The ConfigProto the graph session runs with (thread pools, XLA), read back from the session."""
        return self._session._config

    def inputs_for(self, signature: str) -> dict[str, FeatureSpec]:
        return dict(self._plan(signature).features)

    def path_for(self, signature: str) -> CallPath:
        return self._plan(signature).path

    def path_reason_for(self, signature: str) -> str:
        """Why a signature takes its path, in words (for `tfpredict inspect` and the doctor)."""
        plan = self._plan(signature)
        op_name = plan.parse.op_name if plan.parse is not None else ""
        inlined = any(op_name.startswith(call + "/") for call in self.inlined)
        where = " (the parse op is inside a tf.function, inlined at load)" if inlined else ""
        if plan.path == CallPath.FEATURES:
            return f"parsed features fed past {plan.parse_op}{where}: no tf.Example is built"
        if plan.path == CallPath.EXAMPLES:
            why = plan.parse.why_not if plan.parse is not None and plan.parse.why_not else "fast_path=False"
            return f"rows serialized to tf.Example, then the signature as exported: {why}"
        if self._functions is not None:
            return "a raw signature called as a TF2 function (a graph session cannot restore its variables)"
        csv = self.csv_spec_for(signature)
        if csv is not None:
            return (
                f"whole CSV lines fed to {csv.line_input!r}, parsed by the export's own DecodeCSV "
                f"({len(csv.dtypes)} columns); `tfpredict predict` feeds a CSV file's lines as they are"
            )
        return "a raw signature: its own input tensors are fed"

    def csv_spec_for(self, signature: str | None = None) -> CsvSpec | None:
        """How a signature that takes whole CSV lines (DecodeCSV in the graph) reads them, or None."""
        name = signature or self.signature
        if name not in self._csv_specs:
            sig = self._plan(name).signature  # an unknown name fails there, with the signatures it has
            self._csv_specs[name] = find_csv_spec(self._graph, sig) if self._functions is None else None
        return self._csv_specs[name]

    def serialized_input_for(self, signature: str | None = None) -> str | None:
        """The signature input that takes serialized tf.Examples (for `run`), or None for a raw signature."""
        parse = self._plan(signature or self.signature).parse
        return parse.serialized_input if parse is not None else None

    # ---------------------------------------------------------------- predicting
    def predict(
        self,
        data: Any,
        *,
        signature: str | None = None,
        outputs: list[str] | None = None,
        allow_missing: F.AllowMissing | None = None,
        assemble: F.Assemble | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict every row of `data` (DataFrame, Arrow Table/RecordBatch, dict of columns, list of row
        dicts, or one row as a dict of scalars). Returns {output name: array with one entry per row}.

        A column the model reads that `data` lacks is an InputError, unless allow_missing names it (or is
        True): it then reads as missing in every row. assemble: {input: source columns} builds one tensor
        input from several columns (["f0", "f1"], "f0:f63" or "f0,f1"). Both default to load()'s."""
        plan = self._plan(signature or self.signature)
        table = F.input_table(
            data,
            plan.features,
            self.allow_missing if allow_missing is None else allow_missing,
            self.assemble if assemble is None else assemble,
        )
        if table.num_rows <= self.batch_size:
            return self.predict_feeds(self._convert(plan, table), outputs=outputs)
        size = self.batch_size

        def convert(start: int) -> Feeds:
            try:
                return self._convert(plan, table.slice(start, start + size))
            except InputError as exc:
                raise rows_from(start, exc) from exc.__cause__

        # The caller's thread converts the next batch while helper threads run the model on those before it.
        parts = overlapped(
            range(0, table.num_rows, size), convert, lambda feeds: self.predict_feeds(feeds, outputs=outputs)
        )
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def convert(
        self,
        data: Any,
        *,
        signature: str | None = None,
        allow_missing: F.AllowMissing | None = None,
        assemble: F.Assemble | None = None,
    ) -> Feeds:
        """Turn rows into feed arrays (the CPU-side half of predict, for pipelines that overlap stages);
        allow_missing and assemble as in predict()."""
        plan = self._plan(signature or self.signature)
        table = F.input_table(
            data,
            plan.features,
            self.allow_missing if allow_missing is None else allow_missing,
            self.assemble if assemble is None else assemble,
        )
        return self._convert(plan, table)

    def predict_feeds(self, feeds: Feeds, *, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on converted feeds."""
        plan = self._plan(feeds.signature)
        keys = self._output_keys(plan, outputs)
        fn = self._callable(plan.signature.name, plan.feed_tensors(), keys)
        try:
            results = fn(*feeds.values)
        except Exception as exc:
            raise prediction_error(self.export_dir, plan.signature.name, exc) from exc
        return dict(zip(keys, results, strict=True))

    def run(
        self, inputs: dict[str, Any], *, signature: str | None = None, outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Feed the signature's own input tensors (e.g. serialized tf.Examples), as TF Serving does."""
        sig = self.signatures.get(signature or self.signature)
        if sig is None:
            raise InputError(
                f"No signature {signature!r}; the export has: {', '.join(sorted(self.signatures))}"
            )
        missing = [k for k in sig.inputs if k not in inputs]
        unknown = [k for k in inputs if k not in sig.inputs]
        if missing or unknown:
            raise InputError(
                f"Signature {sig.name!r} takes inputs {sorted(sig.inputs)}; "
                f"missing {missing}, unknown {unknown}"
            )
        plan = self._plan(sig.name)
        keys = self._output_keys(plan, outputs)
        names = sorted(sig.inputs)
        fn = self._callable(sig.name, [sig.inputs[k].tensor_name for k in names], keys)
        values = [as_feed(inputs[k], sig.inputs[k].dtype, k) for k in names]
        try:
            results = fn(*values)
        except Exception as exc:
            raise prediction_error(self.export_dir, sig.name, exc) from exc
        return dict(zip(keys, results, strict=True))

    def xla_clusters(self, data: Any, *, signature: str | None = None) -> int:
        """How many XLA clusters one call on `data` runs: 0 when XLA is off or nothing in the export could
        be compiled (string ops, lookups and the like stay uncompiled), so a caller can say so."""
        plan = self._plan(signature or self.signature)
        if self._functions is not None:
            return 0
        from tensorflow.core.protobuf import config_pb2

        feeds = self._convert(plan, F.as_table(data, needed=list(plan.features)))
        options = config_pb2.CallableOptions()
        options.feed.extend(plan.feed_tensors())
        options.fetch.extend(t.tensor_name for t in plan.signature.outputs.values())
        options.run_options.output_partition_graphs = True
        step = self._session._make_callable_from_options(options)
        metadata = config_pb2.RunMetadata()
        step(*feeds.values, run_metadata=metadata)
        return sum(n.op == "_XlaCompile" for g in metadata.partition_graphs for n in g.node)

    def trace(self, feeds: Feeds, runs: int = 3) -> list[NodeTime]:
        """Each graph node's time in one model call on `feeds` (mean of `runs` FULL_TRACE runs after one warm
        run), from the session's step stats: the doctor's view of where the model spends its time."""
        import tensorflow as tf

        if self._functions is not None:
            raise PredictionError("the export runs as TF2 functions: there are no graph-session step stats")
        plan = self._plan(feeds.signature)
        graph = self._graph
        fetches = [graph.get_tensor_by_name(t.tensor_name) for t in plan.signature.outputs.values()]
        feed_dict = {
            graph.get_tensor_by_name(n): v for n, v in zip(plan.feed_tensors(), feeds.values, strict=True)
        }
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        self._session.run(fetches, feed_dict=feed_dict)  # warm: no first-run setup in the traced runs
        micros: dict[str, float] = {}
        types: dict[str, str] = {}
        for _ in range(runs):  # several: one run on a busy machine can be off by a descheduled thread
            metadata = tf.compat.v1.RunMetadata()
            self._session.run(fetches, feed_dict=feed_dict, options=options, run_metadata=metadata)
            for node in (n for dev in metadata.step_stats.dev_stats for n in dev.node_stats):
                name = node.node_name.split(":")[0]
                if name not in types:
                    types[name] = op_type(graph, name, node.timeline_label)
                spent = node.all_end_rel_micros or (node.op_end_rel_micros - node.op_start_rel_micros)
                micros[name] = micros.get(name, 0.0) + max(0, spent)
        return [NodeTime(name, types[name], us / 1000.0 / runs) for name, us in micros.items()]

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Predictor({str(self.export_dir)!r}, signature={self.signature!r}, path={self.path!r})"

    # ---------------------------------------------------------------- internals
    def _plan(self, name: str) -> _Plan:
        plan = self._plans.get(name)
        if plan is not None:
            return plan
        sig = self.signatures.get(name)
        if sig is None:
            raise InputError(f"No signature {name!r}; the export has: {', '.join(sorted(self.signatures))}")
        with self._lock:
            if name not in self._plans:
                parse = None if self._functions else find_parse_spec(self._graph, self._session, sig)
                self._plans[name] = _Plan(sig, parse, self._fast_path)
            return self._plans[name]

    def _output_keys(self, plan: _Plan, outputs: list[str] | None) -> list[str]:
        available = plan.signature.outputs
        if outputs is None:
            return list(available)
        unknown = [o for o in outputs if o not in available]
        if unknown:
            raise InputError(
                f"Unknown output(s) {unknown} for signature {plan.signature.name!r}; "
                f"it has {sorted(available)}"
            )
        return list(outputs)

    def _callable(self, signature: str, feeds: list[str], keys: list[str]) -> Any:
        """A compiled session step from these feed tensors to these outputs, made once and reused.

        Session.make_callable with feeds goes through Session.run's Python feed handling on every call;
        the C++ Session::MakeCallable API (what Keras 1 used) runs the step directly: 3-4x less overhead
        per call, which is most of a single-row prediction.
        """
        cache_key = (signature, tuple(feeds), tuple(keys))
        fn = self._callables.get(cache_key)
        if fn is None:
            with self._lock:
                fn = self._callables.get(cache_key)
                if fn is None:
                    from tensorflow.core.protobuf import config_pb2

                    sig = self.signatures[signature]
                    if self._functions is not None:
                        fn = self._functions.callable(sig, feeds, keys)
                        self._callables[cache_key] = fn
                        return fn
                    options = config_pb2.CallableOptions()
                    options.feed.extend(feeds)
                    options.fetch.extend(sig.outputs[k].tensor_name for k in keys)
                    fn = self._session._make_callable_from_options(options)
                    self._callables[cache_key] = fn
        return fn

    def _convert(self, plan: _Plan, table: F.Table) -> Feeds:
        n = table.num_rows
        if plan.path == CallPath.TENSORS:
            values = [F.convert_column(table.columns.get(k), s, n) for k, s in plan.features.items()]
            return Feeds(plan.signature.name, n, values)
        converted = {k: F.convert_column(table.columns.get(k), s, n) for k, s in plan.features.items()}
        if plan.path == CallPath.EXAMPLES:
            from .examples import serialize_examples

            return Feeds(plan.signature.name, n, [serialize_examples(converted, plan.features, n)])
        flat: list[Any] = []
        for value in converted.values():
            if isinstance(value, SparseValue):
                flat += [value.indices, value.values, value.dense_shape]
            else:
                flat.append(value)
        return Feeds(plan.signature.name, n, flat)


def _default_signature(signatures: dict[str, SignatureInfo]) -> str:
    for name in ("predict", "serving_default"):
        if name in signatures:
            return name
    return sorted(signatures)[0]

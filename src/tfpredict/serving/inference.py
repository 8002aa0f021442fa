"""The request path, once per kind of request: decode -> batch -> predict -> unbatch -> encode.

The front ends (rest.py: JSON, grpc_api.py: protobuf) only decode their protocol into a request value
(PredictRequest, ExamplesRequest, MultiInferenceRequest) and encode the Answer that comes back. Between
them, one small class per kind (Predict, Classify, Regress, MultiInference) runs `infer`, whose steps are:

    servable, signature   the version the request's Spec names, and its signature ("" = serving_default)
    batch                 what to feed, and the key by which calls are merged into one batch
    predict               InferenceService.run: the servable's batcher, or a worker thread if batching is off
    unbatch               this request's outputs, checked and shaped as TF Serving does

`InferenceService.run` is the one place that decides how a call is batched. The path costs one coroutine
(`infer`) between a front end's handler and the future it awaits: no Task, no other await.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from . import json_codec
from .models import CallKey, ModelManager, Servable
from .request_log import LogEntry, RequestLog
from .response_cache import ResponseCache
from .status import ServingError, invalid

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


class Spec(NamedTuple):
    """Which model a request is for (a ModelSpec): name, and a version or a label, and a signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = ""


@dataclass
class Call:
    """What to run: feed tensors (kind "tensors") or feature rows (kind "rows"), with its batching key."""

    key: CallKey
    data: Any
    size: int | None  # rows, or None when the inputs have no common batch dimension (never batched)


class Answer(NamedTuple):
    """What a request's path gives back to its front end to encode."""

    model: str
    version: int
    signature: str
    result: Any  # the kind's unbatch(): outputs, a Classification, or regression values


def signature_of(servable: Servable, name: str) -> Any:
    """The SignatureInfo a request names ("" = serving_default), or INVALID_ARGUMENT."""
    sig_name = name or DEFAULT_SIGNATURE
    sig = servable.predictor.signatures.get(sig_name)
    if sig is None:
        raise invalid(f'Serving signature name: "{sig_name}" not found in signature def')
    return sig


PREDICT_METHOD = "tensorflow/serving/predict"


def check_method_name(sig: Any, kind: str) -> None:
    """--enable_signature_method_name_check: TF Serving's errors for a signature of another method_name
    (Predict takes predict, classify and regress signatures; Classify and Regress only their own)."""
    method = getattr(sig, "method_name", "")
    if kind == "predict":
        if method not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(
                "INTERNAL",
                f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
                f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {method}",
            )
        return
    wanted = {"classify": (CLASSIFY_METHOD, "classification"), "regress": (REGRESS_METHOD, "regression")}
    if kind in wanted and method != wanted[kind][0]:
        name, what = wanted[kind]
        raise invalid(f"Expected {what} signature method_name to be {name}. Was: {method}")


def tensors_call(signature: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...] = ()) -> Call:
    if len(inputs) == 1:  # the usual case (serialized tf.Examples): no sets, no sorting
        ((name, v),) = inputs.items()
        key = ("tensors", signature, outputs, ((name, v.dtype.str, v.shape[1:]),))
        return Call(key, inputs, v.shape[0] if v.ndim else None)
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    size = sizes.pop() if len(sizes) == 1 else None
    layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
    return Call(("tensors", signature, outputs, layout), inputs, size)


def rows_call(signature: str, rows: list[dict[str, Any]], outputs: tuple[str, ...] = ()) -> Call:
    return Call(("rows", signature, outputs), rows, len(rows))


def uses_feature_rows(servable: Servable, sig: Any) -> bool:
    """True when a signature starts with a tf.Example parse the core can skip (or build examples for);
    asked of the predictor once per version and signature."""
    return servable.memo(("feature rows", sig.name), lambda: _parses_examples(servable, sig))  # type: ignore[no-any-return]


def _parses_examples(servable: Servable, sig: Any) -> bool:
    from ..predictor import CallPath  # the predictor is loaded: TensorFlow is imported already

    try:
        return servable.predictor.path_for(sig.name) in (CallPath.FEATURES, CallPath.EXAMPLES)
    except Exception:
        return False


class InferenceService:
    """Runs calls on servables: through the servable's batcher when batching is on, else on a thread pool."""

    def __init__(
        self,
        manager: ModelManager,
        threads: int = 16,
        cache: ResponseCache | None = None,
        request_log: RequestLog | None = None,
        method_name_check: bool = False,
    ) -> None:
        self.method_name_check = method_name_check  # --enable_signature_method_name_check
        self.manager = manager
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
        self.cache = cache  # --response_cache_bytes: answers to repeated calls, never queued
        self.request_log = request_log  # the models' logging_config: sampled requests to files
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's one event loop

    def servable(self, spec: Spec) -> Servable:
        return self.manager.get(spec.name, spec.version, spec.label)

    def run(
        self, servable: Servable, call: Call, cached: bool = True
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        """The outputs, to await: from the response cache, the servable's batcher, or a worker thread when
        batching is off. `cached`: False when the front end keeps the answer under a key of its own (REST's
        body key), so the outputs are neither looked up nor kept a second time.
        (A plain function returning the future: one coroutine less on every request's path.)"""
        loop = self._loop
        if loop is None:  # once: asyncio.get_running_loop() makes a syscall (getpid) every time
            loop = self._loop = asyncio.get_running_loop()
        cache = self.cache
        if cache is not None and cached:
            key = cache.key(servable, call.key, call.data)
            if key is not None:
                return self._cached(cache, key, servable, call, loop)
        return self._dispatch(servable, call, loop)

    def _cached(
        self,
        cache: ResponseCache,
        key: bytes,
        servable: Servable,
        call: Call,
        loop: asyncio.AbstractEventLoop,
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        """A hit as a done future (no batch queue, no thread); a miss runs, and its outputs are kept."""
        outputs = cache.get(key, servable.name)
        if outputs is not None:
            done: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
            done.set_result(outputs)
            return done
        future = self._dispatch(servable, call, loop)
        name = servable.name

        def keep(f: asyncio.Future[dict[str, np.ndarray]]) -> None:
            if not f.cancelled() and f.exception() is None:
                cache.put(key, name, f.result())

        future.add_done_callback(keep)
        return future

    def _dispatch(
        self, servable: Servable, call: Call, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        if servable.batcher is not None and call.size:
            return servable.batcher.submit(call.key, call.data, call.size, loop)  # type: ignore[no-any-return]
        return loop.run_in_executor(self.executor, servable.execute, call.key, call.data)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        if self.request_log is not None:
            self.request_log.close()  # what was sampled is written before the process ends


class Kind:
    """One kind of request; `infer` is its whole path, `batch` and `unbatch` what is particular to it."""

    kind = ""  # "predict", "classify", "regress": how the request log writes it

    async def infer(self, service: InferenceService, request: Any, cached: bool = True) -> Answer:
        """`cached`: whether the outputs cache is asked (InferenceService.run)."""
        spec = request.spec
        log = service.request_log
        sampled = log is not None and log.sampled(spec.name)  # one dict lookup when nothing is logged
        start = time.perf_counter()
        sig = call = None
        try:
            servable = service.servable(spec)
            with servable:  # counted in flight: the version is not unloaded under the request
                sig = signature_of(servable, spec.signature)
                if service.method_name_check:
                    check_method_name(sig, self.kind)
                call = self.batch(servable, sig, request)
                outputs = await service.run(servable, call, cached)
            answer = Answer(spec.name, servable.version, sig.name, self.unbatch(outputs, request))
        except Exception as exc:
            if sampled:
                log.record(LogEntry.failed(self.kind, spec, sig, call, exc, start))  # type: ignore[union-attr]
            raise
        if sampled:
            log.record(LogEntry.answered(self.kind, answer, sig, call, start))  # type: ignore[union-attr]
        return answer

    def batch(self, servable: Servable, sig: Any, request: Any) -> Call:
        raise NotImplementedError

    def unbatch(self, outputs: dict[str, np.ndarray], request: Any) -> Any:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- predict
class PredictRequest(Protocol):
    """A Predict request as a front end decodes it. Its tensors are decoded once the signature is known:
    JSON carries no dtypes (the signature's give them), and TF Serving looks up the signature first."""

    spec: Spec
    output_filter: Sequence[str]

    def feature_rows(self, sig: Any) -> list[dict[str, Any]] | None:
        """Feature dicts (not the signature's own inputs) to feed past its tf.Example parse, or None."""

    def tensors(self, sig: Any) -> dict[str, np.ndarray]:
        """The signature's input tensors."""


class Predict(Kind):
    kind = "predict"

    def batch(self, servable: Servable, sig: Any, request: PredictRequest) -> Call:
        rows = request.feature_rows(sig)
        if rows is not None and uses_feature_rows(servable, sig):
            # Feature dicts for an Estimator's parsing signature: the core feeds them past ParseExample.
            return rows_call(sig.name, rows, _output_filter(sig, request.output_filter))
        inputs = request.tensors(sig)
        missing = sorted(set(sig.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(sig.inputs))
        if missing or extra:
            raise invalid(
                f"Request inputs do not match required inputs for model `{request.spec.name}`. "
                f"Send extra: {{{', '.join(extra)}}}. Missing but required: {{{', '.join(missing)}}}."
            )
        return tensors_call(sig.name, inputs, _output_filter(sig, request.output_filter))

    def unbatch(self, outputs: dict[str, np.ndarray], request: PredictRequest) -> dict[str, np.ndarray]:
        return outputs


def _output_filter(sig: Any, output_filter: Sequence[str]) -> tuple[str, ...]:
    seen = set()
    for name in output_filter:
        if name not in sig.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {name} Outputs expected to be in the set "
                f"{{{','.join(sorted(sig.outputs))}}}."
            )
        if name in seen:
            raise invalid(f"duplicate output tensor alias: {name}")
        seen.add(name)
    return tuple(output_filter)


# ---------------------------------------------------------------------------------- classify / regress
class ExamplesRequest(NamedTuple):
    """A Classify or Regress request: tf.Examples, as feature rows (REST JSON) or serialized (gRPC)."""

    spec: Spec
    rows: list[dict[str, Any]] | None
    serialized: np.ndarray | None

    @property
    def size(self) -> int:
        return len(self.rows if self.rows is not None else self.serialized)  # type: ignore[arg-type]


class Classification(NamedTuple):
    """Classify's answer, one list per example: labels and/or scores (at least one), `width` classes each."""

    labels: list[list[str]] | None
    scores: list[list[float]] | None
    width: int


class ExamplesKind(Kind):
    """Classify and Regress: a signature of one input (serialized tf.Examples) and named outputs."""

    kind = ""
    outputs: tuple[str, ...] = ()  # the outputs TF Serving reads, of which the signature needs one

    def missing_outputs(self, sig: Any) -> str:
        raise NotImplementedError

    def batch(self, servable: Servable, sig: Any, request: ExamplesRequest) -> Call:
        outputs = servable.memo((self.kind, sig.name), lambda: self._checked_outputs(sig))
        if request.rows is not None and uses_feature_rows(servable, sig):
            return rows_call(
                sig.name, request.rows, outputs
            )  # the fast path: no tf.Example is built or parsed
        serialized = request.serialized
        if serialized is None:
            assert request.rows is not None
            serialized = json_codec.rows_to_examples(request.rows)
        (input_key,) = sig.inputs
        if sig.inputs[input_key].dtype != "string":
            raise invalid(
                f"Signature {sig.name!r} takes {sig.inputs[input_key].dtype} input {input_key!r}, not "
                "serialized tf.Examples; use :predict for it"
            )
        return tensors_call(sig.name, {input_key: serialized}, outputs)

    def _checked_outputs(self, sig: Any) -> tuple[str, ...]:
        """Once per version and signature (Servable.memo); a check that fails is not remembered."""
        if len(sig.inputs) != 1:
            raise invalid("Expected one input Tensor.")
        outputs = tuple(k for k in self.outputs if k in sig.outputs)
        if not outputs:
            raise invalid(self.missing_outputs(sig))
        return outputs


class Classify(ExamplesKind):
    kind = "classify"
    outputs = ("classes", "scores")

    def missing_outputs(self, sig: Any) -> str:
        return (
            f'Expected classification signature outputs to contain at least one of "classes" or '
            f'"scores". Signature {sig.name!r} has: {", ".join(sorted(sig.outputs))}'
        )

    def unbatch(self, outputs: dict[str, np.ndarray], request: ExamplesRequest) -> Classification:
        """Classes [n, k] of strings and scores [n, k] of float32, validated as TF Serving does."""
        n = request.size
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for what, t in (("classes", classes), ("scores", scores)):
            if t is None:
                continue
            if t.ndim == 1:
                t = t.reshape(-1, 1)
            if t.ndim != 2:
                raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {list(t.shape)}")
            if t.shape[0] != n:
                raise invalid(f"Expected {what} output batch size of {n}. Got: {t.shape[0]}")
            if what == "classes":
                if t.dtype.kind not in "OSU":
                    raise invalid(f"Expected classes Tensor of DT_STRING. Got: {t.dtype}")
                classes = t
            else:
                if t.dtype.kind != "f":
                    raise invalid(f"Expected scores Tensor of DT_FLOAT. Got: {t.dtype}")
                scores = t.astype(np.float32, copy=False)
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
        labels = None if classes is None else [[_text(c) for c in row] for row in classes.tolist()]
        return Classification(labels, None if scores is None else scores.tolist(), width)


class Regress(ExamplesKind):
    kind = "regress"
    outputs = ("outputs",)

    def missing_outputs(self, sig: Any) -> str:
        return (
            f'Expected regression signature to have an "outputs" output; {sig.name!r} has: '
            f"{', '.join(sorted(sig.outputs))}"
        )

    def unbatch(self, outputs: dict[str, np.ndarray], request: ExamplesRequest) -> np.ndarray:
        """One float32 value per example."""
        n = request.size
        t = outputs["outputs"]
        if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
            raise invalid(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                f"{list(t.shape)}"
            )
        if t.shape[0] != n:
            raise invalid(f"Input batch size did not match output batch size: {n} vs. {t.shape[0]}")
        if t.dtype.kind != "f":
            raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {t.dtype}")
        return t.reshape(-1).astype(np.float32, copy=False)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------------------------- multi-inference
class InferenceTask(NamedTuple):
    spec: Spec
    method: str  # CLASSIFY_METHOD or REGRESS_METHOD


class MultiInferenceRequest(NamedTuple):
    """Several classify / regress signatures of one model over the same serialized tf.Examples."""

    tasks: tuple[InferenceTask, ...]
    serialized: np.ndarray


class MultiInference:
    """Each task's Classify or Regress path in turn, on the examples decoded once."""

    @staticmethod
    def check(models: Sequence[str], signatures: Sequence[str]) -> None:
        """The tasks' ModelSpecs, checked before the examples are decoded (TF Serving's order)."""
        if not models:
            raise invalid("MultiInferenceRequest must contain at least one task")
        if len(set(models)) != 1:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        named = [s or DEFAULT_SIGNATURE for s in signatures]
        if len(set(named)) != len(named):
            raise invalid("Duplicate evaluation of signature: " + ", ".join(named))

    async def infer(
        self, service: InferenceService, request: MultiInferenceRequest
    ) -> list[tuple[str, Answer]]:
        """(method, answer) per task, in the request's order."""
        answers = []
        for task in request.tasks:
            kind = EXAMPLES_KINDS.get(task.method)
            if kind is None:
                raise ServingError("UNIMPLEMENTED", f"Unsupported signature method_name: {task.method}")
            answer = await kind.infer(service, ExamplesRequest(task.spec, None, request.serialized))
            answers.append((task.method, answer))
        return answers


PREDICT = Predict()
CLASSIFY = Classify()
REGRESS = Regress()
MULTI_INFERENCE = MultiInference()
EXAMPLES_KINDS: dict[str, ExamplesKind] = {CLASSIFY_METHOD: CLASSIFY, REGRESS_METHOD: REGRESS}

"""SavedModel plumbing: find the version directory, load it into a graph session, read its signatures,
and find the tf.Example parse op a parsing serving receiver puts in front of the model.

The fast path rests on one fact of TF1-style graphs: a session can be fed *any* tensor, not just
placeholders. Feeding the outputs of ParseExample(V2) directly prunes the parsing (and the tf.Example
serialization it would need) out of every call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .features import FeatureSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

log = logging.getLogger(__name__)

PARSE_OPS = ("ParseExample", "ParseExampleV2")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class TensorInfo:
    """A signature input or output: its key, dtype name, shape (batch dimension included) and graph tensor."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None
    tensor_name: str


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


@dataclass(frozen=True)
class SparseFeed:
    """The three tensors a VarLenFeature's SparseTensor is made of, as ParseExample outputs them."""

    indices: str
    values: str
    dense_shape: str


@dataclass
class ParseSpec:
    """The parse op in front of a signature: the serialized input it reads and the tensors it produces."""

    serialized_input: str  # signature input key that holds the serialized tf.Examples
    features: dict[str, FeatureSpec] = field(default_factory=dict)
    dense: dict[str, str] = field(default_factory=dict)  # feature -> dense output tensor name
    sparse: dict[str, SparseFeed] = field(default_factory=dict)
    prunable: bool = True  # False when the model also reads the serialized strings some other way
    why_not: str = ""
    op_type: str = "ParseExample"  # or ParseExampleV2
    op_name: str = ""


def resolve_export_dir(path: str | os.PathLike[str]) -> Path:
    """A SavedModel directory, or the highest numeric version under a base directory (as TF Serving does)."""
    base = Path(path)
    if not base.exists():
        raise ModelLoadError(f"No such export: {base}")
    if not base.is_dir():
        raise ModelLoadError(f"Not a SavedModel directory: {base} is a file")
    if any((base / name).is_file() for name in SAVED_MODEL_FILES):
        return base
    versions = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit() and _has_saved_model(p)]
    if not versions:
        raise ModelLoadError(
            f"Not a SavedModel: {base} has no saved_model.pb and no numeric version directories holding one"
        )
    return max(versions, key=lambda p: int(p.name))


def _has_saved_model(path: Path) -> bool:
    return any((path / name).is_file() for name in SAVED_MODEL_FILES)


def read_saved_model(export_dir: Path) -> Any:
    """The SavedModel proto of an export directory (binary or text)."""
    proto = saved_model_pb2.SavedModel()
    pb = export_dir / "saved_model.pb"
    try:
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse((export_dir / "saved_model.pbtxt").read_text(), proto)
    except Exception as exc:  # a corrupt file: protobuf raises DecodeError and friends
        raise ModelLoadError(f"Not a valid SavedModel: {export_dir}: {exc}") from exc
    return proto


def read_tags(export_dir: Path) -> list[set[str]]:
    """The tag sets of the meta graphs in a SavedModel."""
    return [set(mg.meta_info_def.tags) for mg in read_saved_model(export_dir).meta_graphs]


def choose_tags(export_dir: Path, tags: Iterable[str] | None = None) -> list[str]:
    """The tag set to load: `tags` when given (it must exist), else the serving one (TF Serving's choice)."""
    tag_sets = read_tags(export_dir)
    if not tag_sets:
        raise ModelLoadError(f"Not a valid SavedModel: {export_dir} holds no meta graph")
    shown = ", ".join("[" + ", ".join(sorted(t)) + "]" for t in tag_sets)
    if tags is not None:
        wanted = set(tags)
        if wanted not in tag_sets:
            raise ModelLoadError(
                f"SavedModel {export_dir} has no tag set [{', '.join(sorted(wanted))}]; it has {shown}"
            )
        return sorted(wanted)
    for found in tag_sets:
        if found == {"serve"}:
            return ["serve"]
    for found in tag_sets:
        if "serve" in found and "gpu" not in found and "tpu" not in found:
            return sorted(found)
    for found in tag_sets:
        if "serve" in found:
            return sorted(found)
    kind = " (a TFMA evaluation export)" if any("eval" in t for t in tag_sets) else ""
    raise ModelLoadError(
        f"SavedModel {export_dir} has only the tag set{'s' if len(tag_sets) > 1 else ''} {shown}{kind}; "
        "tfpredict needs a serving export (tag 'serve'), or name a tag set with --tags / tags="
    )


def session_config(
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    base: Any = None,
) -> Any:
    """The session's ConfigProto: `base` (a copy) or a fresh one, with the threads and XLA given."""
    config = tf.compat.v1.ConfigProto()
    if base is not None:
        config.CopyFrom(base)
    # Like TF Serving: an export pinned to a device this machine lacks (a GPU) runs where it can.
    config.allow_soft_placement = True
    if intra_op_threads:
        config.intra_op_parallelism_threads = intra_op_threads
    if inter_op_threads:
        config.inter_op_parallelism_threads = inter_op_threads
    if xla:
        config.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_1
    return config


@dataclass
class LoadedGraph:
    """An export imported into a graph session, with what was changed on the way in."""

    graph: Any
    session: Any
    meta: Any  # the MetaGraphDef as imported (after rewrites)
    tags: list[str]
    producer: str  # the TensorFlow version that wrote the export, "" when it does not say
    rewrites: list[str]  # legacy-op rewrites applied, one line per kind
    inlined: list[str]  # function call nodes spliced into the graph (parsing inside a tf.function)


def load_session(export_dir: Path, config: Any, tags: Iterable[str] | None = None) -> LoadedGraph:
    """Load the export into a fresh graph and session, rewriting legacy ops and inlining the functions a
    signature's serialized tf.Examples flow into (see legacy_ops.py, inline.py) before the import."""
    chosen = choose_tags(export_dir, tags)
    try:
        return _load(export_dir, config, chosen, inline=True)
    except ModelLoadError as first:
        # Inlining is an optimization: if the spliced graph does not import, the export as written still may.
        try:
            loaded = _load(export_dir, config, chosen, inline=False)
        except ModelLoadError:
            raise first from None
        log.info("%s: loaded without inlining its tf.function calls (%s)", export_dir, first.message)
        return loaded


def _load(export_dir: Path, config: Any, chosen: list[str], inline: bool) -> LoadedGraph:
    from tensorflow.python.saved_model import loader_impl

    from .inline import inline_serialized_input_calls
    from .legacy_ops import rewrite_legacy_ops

    try:
        loader = loader_impl.SavedModelLoader(str(export_dir))
        meta = loader.get_meta_graph_def_from_tags(chosen)
    except Exception as exc:
        raise ModelLoadError(f"Cannot load SavedModel {export_dir}: {_first_line(exc)}") from exc
    producer = meta.meta_info_def.tensorflow_version
    inlined = inline_serialized_input_calls(meta.graph_def, _unparsed_string_inputs(meta)) if inline else []
    rewrites = rewrite_legacy_ops(meta.graph_def, producer)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    tf_log = tf.get_logger()
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)  # the v1 loader warns it is deprecated on every load
    try:
        with graph.as_default():
            loaded = loader.load(session, chosen)  # reads the meta graph we rewrote in place
    except Exception as exc:
        session.close()
        raise ModelLoadError(f"Cannot load SavedModel {export_dir}: {_first_line(exc)}") from exc
    finally:
        tf_log.setLevel(level)
    return LoadedGraph(graph, session, loaded, chosen, producer, rewrites, inlined)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unparsed_string_inputs(meta: Any) -> list[str]:
    """The string inputs of one-input signatures whose tensor no parse op reads directly: the serialized
    tf.Examples of a TF2 function that parses them inside (candidates for inlining)."""
    by_name = {n.name: n for n in meta.graph_def.node}
    readers: dict[str, set[str]] = {}
    for node in meta.graph_def.node:
        for ref in node.input:
            readers.setdefault(ref.split(":")[0], set()).add(node.op)
    found = []
    for key, sig in meta.signature_def.items():
        if key.startswith("__") or len(sig.inputs) != 1:
            continue
        (info,) = sig.inputs.values()
        name = info.name.split(":")[0]
        node = by_name.get(name)
        dtype = node.attr["dtype"].type if node is not None and "dtype" in node.attr else info.dtype
        if dtype != tf.string.as_datatype_enum:
            continue
        ops = readers.get(name, set())
        if ops & {"PartitionedCall", "StatefulPartitionedCall", "Identity"} and not ops & set(PARSE_OPS):
            found.append(info.name)
    return sorted(set(found))


def unrestored_variables(graph: Any, session: Any) -> list[str]:
    """Resource variables the v1 loader left without a value. TF2 exports of some models (e.g. Keras under
    a distribution strategy) restore only through their object graph, which a graph session does not read."""
    handles = [op for op in graph.get_operations() if op.type == "VarHandleOp"]
    if not handles:
        return []
    with graph.as_default():
        checks = [tf.raw_ops.VarIsInitializedOp(resource=op.outputs[0]) for op in handles]
    done = session.run(checks)
    return [op.name for op, ok in zip(handles, done, strict=True) if not ok]


class FunctionSignatures:
    """Signatures called as TF2 concrete functions (tf.saved_model.load): the path for TF2 exports a graph
    session cannot restore. Slower per call than a session step, so only used when needed."""

    def __init__(self, export_dir: Path) -> None:
        try:
            self._loaded = tf.saved_model.load(str(export_dir))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"Cannot load SavedModel {export_dir}: {first}") from exc

    def callable(self, signature: SignatureInfo, feeds: list[str], keys: list[str]) -> Any:
        fn = self._loaded.signatures[signature.name]
        by_tensor = {info.tensor_name: key for key, info in signature.inputs.items()}
        names = [by_tensor[t] for t in feeds]

        def call(*arrays: Any) -> list[Any]:
            out = fn(**{n: tf.constant(a) for n, a in zip(names, arrays, strict=True)})
            return [out[k].numpy() for k in keys]

        return call


def signatures_of(meta: Any, graph: Any = None) -> dict[str, SignatureInfo]:
    """The callable signatures. With `graph`, each tensor's dtype is the graph's own: a signature that
    mislabels its input (TF Serving's half_plus_three declares serialized tf.Examples as DT_FLOAT) is
    fed what the graph really takes."""
    result = {}
    for key, sig in meta.signature_def.items():
        if key.startswith("__"):  # __saved_model_init_op and friends are not callable signatures
            continue
        result[key] = SignatureInfo(
            name=key,
            method_name=sig.method_name,
            # Sorted: a protobuf map has no stable order, and output files should have one.
            inputs={k: _tensor_info(k, sig.inputs[k], graph) for k in sorted(sig.inputs)},
            outputs={k: _tensor_info(k, sig.outputs[k], graph) for k in sorted(sig.outputs)},
        )
    return result


def _tensor_info(key: str, info: Any, graph: Any = None) -> TensorInfo:
    dtype = tf.dtypes.as_dtype(info.dtype).name if info.dtype else "unknown"
    if graph is not None and info.name:
        try:
            dtype = graph.get_tensor_by_name(info.name).dtype.base_dtype.name
        except (KeyError, ValueError):  # a sparse or composite signature tensor: keep the declared dtype
            pass
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorInfo(name=key, dtype=dtype, shape=shape, tensor_name=info.name or "")


def find_parse_spec(graph: Any, session: Any, signature: SignatureInfo) -> ParseSpec | None:
    """The tf.Example parse op fed by this signature's string input, or None for a raw signature."""
    string_inputs = {k: v for k, v in signature.inputs.items() if v.dtype == "string" and v.tensor_name}
    if len(signature.inputs) != 1 or len(string_inputs) != 1:
        return None
    ((key, info),) = string_inputs.items()
    serialized = graph.get_tensor_by_name(info.tensor_name)
    parse_ops = [op for op in _consumers(serialized) if op.type in PARSE_OPS]
    if len(parse_ops) != 1:
        return None
    op = parse_ops[0]
    spec = _read_parse_op(op, session)
    spec.serialized_input = key
    if spec.prunable:
        outputs = [graph.get_tensor_by_name(t.tensor_name) for t in signature.outputs.values()]
        if _reaches(outputs, stop=set(op.outputs), target=serialized.op):
            spec.prunable = False
            spec.why_not = "the model reads the serialized tf.Examples other than through ParseExample"
    return spec


@dataclass(frozen=True)
class CsvSpec:
    """A receiver that takes whole CSV lines (DecodeCSV on the signature's string input): Cloud ML Engine's
    "CSV" serving input. The columns are positional; each has a dtype and a default ('' = required)."""

    line_input: str  # the signature input key that takes the lines
    dtypes: tuple[str, ...]
    delimiter: str
    quoted: bool


def find_csv_spec(graph: Any, signature: SignatureInfo) -> CsvSpec | None:
    """The DecodeCSV op fed by this signature's one string input (through Identity, ExpandDims, Reshape),
    or None."""
    if len(signature.inputs) != 1:
        return None
    ((key, info),) = signature.inputs.items()
    if info.dtype != "string" or not info.tensor_name:
        return None
    todo = [graph.get_tensor_by_name(info.tensor_name)]
    while todo:
        tensor = todo.pop()
        for op in tensor.consumers():
            if op.type == "DecodeCSV" and op.inputs[0] is tensor:
                return CsvSpec(
                    key,
                    tuple(tf.dtypes.as_dtype(t).name for t in op.get_attr("OUT_TYPE")),
                    op.get_attr("field_delim").decode(),
                    bool(op.get_attr("use_quote_delim")),
                )
            if op.type in ("Identity", "ExpandDims", "Reshape", "Squeeze"):
                todo.append(op.outputs[0])
    return None


def _consumers(tensor: Any) -> list[Any]:
    """Ops that read `tensor`, looking through Identity ops."""
    found = []
    for op in tensor.consumers():
        if op.type == "Identity":
            found.extend(_consumers(op.outputs[0]))
        else:
            found.append(op)
    return found


def _reaches(outputs: Iterable[Any], stop: set[Any], target: Any) -> bool:
    """Does any of `outputs` depend on op `target` along a path that avoids the tensors in `stop`?"""
    seen: set[Any] = set()
    todo = [t.op for t in outputs if t not in stop]
    while todo:
        op = todo.pop()
        if op in seen:
            continue
        seen.add(op)
        if op is target:
            return True
        todo.extend(t.op for t in op.inputs if t not in stop)
        todo.extend(op.control_inputs)
    return False


def _read_parse_op(op: Any, session: Any) -> ParseSpec:
    """Decode the keys, dtypes, shapes and defaults of a ParseExample / ParseExampleV2 op."""
    spec = ParseSpec(serialized_input="", op_type=op.type, op_name=op.name)
    if op.type == "ParseExampleV2":
        num_sparse = op.get_attr("num_sparse")
        dense_types = op.get_attr("Tdense")
        if op.get_attr("ragged_value_types"):
            spec.prunable, spec.why_not = False, "ragged features are not fed directly"
        sparse_keys, dense_keys = session.run([op.inputs[2], op.inputs[3]])
        defaults_in = list(op.inputs[5 : 5 + len(dense_types)])
    else:  # ParseExample (v1): serialized, names, sparse_keys[Nsparse], dense_keys[Ndense], dense_defaults
        num_sparse = op.get_attr("Nsparse")
        dense_types = op.get_attr("Tdense")
        n_dense = len(dense_types)
        keys = session.run(list(op.inputs[2 : 2 + num_sparse + n_dense]))
        sparse_keys, dense_keys = keys[:num_sparse], keys[num_sparse:]
        defaults_in = list(op.inputs[2 + num_sparse + n_dense :])
    sparse_types = op.get_attr("sparse_types")
    dense_shapes = op.get_attr("dense_shapes")
    defaults = session.run(defaults_in) if defaults_in else []
    out = op.outputs
    for i, key in enumerate(_names(sparse_keys)):
        spec.features[key] = FeatureSpec(key, tf.dtypes.as_dtype(sparse_types[i]).name, (None,), "varlen")
        spec.sparse[key] = SparseFeed(out[i].name, out[num_sparse + i].name, out[2 * num_sparse + i].name)
    for j, key in enumerate(_names(dense_keys)):
        shape = tuple(None if d < 0 else int(d) for d in tf.TensorShape(dense_shapes[j]).as_list())
        if any(d is None for d in shape):
            spec.prunable, spec.why_not = False, f"feature {key!r} has a variable-length dense shape"
        default = defaults[j]
        value = None if default.size == 0 else _plain(default)
        dtype = tf.dtypes.as_dtype(dense_types[j]).name
        spec.features[key] = FeatureSpec(key, dtype, shape, "dense", value)
        spec.dense[key] = out[3 * num_sparse + j].name
    return spec


def _names(keys: Any) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else str(k) for k in list(keys)]


def _plain(value: Any) -> Any:
    """A default value as plain Python (scalar or flat list) for display and filling."""
    flat = value.reshape(-1).tolist()
    flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
    return flat[0] if len(flat) == 1 else flat

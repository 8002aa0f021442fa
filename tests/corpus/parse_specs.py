"""The tf.Example features each parse op of a SavedModel reads (key -> dtype, kind), from the graph alone."""

from __future__ import annotations

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

_NAMES = {types_pb2.DT_FLOAT: "float", types_pb2.DT_INT64: "int64", types_pb2.DT_STRING: "string"}


def _keys(node_input: str, nodes: dict) -> list[str]:
    node = nodes.get(node_input.lstrip("^").split(":")[0])
    if node is None or node.op != "Const":
        return []
    t = node.attr["value"].tensor
    return [s.decode() for s in t.string_val]


def _scan(node_defs, out: dict) -> None:
    nodes = {n.name: n for n in node_defs}
    for n in node_defs:
        if n.op == "ParseExample":
            ns, nd = n.attr["Nsparse"].i, n.attr["Ndense"].i
            sparse = [_keys(i, nodes)[0] for i in n.input[2 : 2 + ns]]
            dense = [_keys(i, nodes)[0] for i in n.input[2 + ns : 2 + ns + nd]]
        elif n.op == "ParseExampleV2":
            sparse, dense = _keys(n.input[2], nodes), _keys(n.input[3], nodes)
        else:
            continue
        # no zip(strict=): this also runs on Python 3.7 (TensorFlow 1.15)
        for k, t in zip(sparse, n.attr["sparse_types"].list.type):  # noqa: B905
            out[k] = (_NAMES[t], "varlen")
        for k, t in zip(dense, n.attr["Tdense"].list.type):  # noqa: B905
            out[k] = (_NAMES[t], "dense")


def parse_features(export_dir: str) -> dict[str, tuple[str, str]]:
    """Every feature any ParseExample(V2) in the export reads: {key: (dtype, "dense" | "varlen")}."""
    sm = saved_model_pb2.SavedModel()
    with open(f"{export_dir}/saved_model.pb", "rb") as f:
        sm.ParseFromString(f.read())
    out: dict[str, tuple[str, str]] = {}
    for mg in sm.meta_graphs:
        _scan(mg.graph_def.node, out)
        for fn in mg.graph_def.library.function:
            _scan(fn.node_def, out)
    return out

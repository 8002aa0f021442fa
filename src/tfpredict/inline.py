"""Inline the function calls a signature's serialized input flows into, so that its parse op is in the graph.

TF2 exports (TFX's native Keras `serve_tf_examples_fn`, `tf.saved_model.save` modules) parse tf.Examples
inside a `tf.function`: the graph holds one `StatefulPartitionedCall` and the ParseExampleV2 op lives in
the function library. Splicing the called bodies into the graph (the call node becomes an IdentityN of
the body's results, so every tensor name the signatures use still resolves) puts the parse op where the
fast path can feed its outputs, and where `savedmodel.find_parse_spec` reads its keys, dtypes and defaults.

Works on GraphDef protos before import; the semantics are the function's own (same ops, same kernels).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
MAX_DEPTH = 8  # nested call levels followed (a signature wrapper, the function, a layer call, ...)


class NotInlinable(Exception):
    """A function body this module cannot splice (polymorphic attrs, list arguments)."""


def inline_serialized_input_calls(graph_def: Any, input_tensors: list[str]) -> list[str]:
    """Inline, in place, every call node that consumes one of `input_tensors` (looking through Identity
    ops), and the calls inside those bodies that consume the same value, up to MAX_DEPTH levels.
    Returns the names of the call nodes inlined."""
    functions = {f.signature.name: f for f in graph_def.library.function}
    inlined: list[str] = []
    todo = [(_node_of(t), _index_of(t), 0) for t in input_tensors]
    while todo:
        node_name, index, depth = todo.pop()
        if depth > MAX_DEPTH:
            continue
        for call, arg_index in _consuming_calls(graph_def, node_name, index):
            fdef = functions.get(call.attr["f"].func.name)
            if fdef is None:
                continue
            try:
                arg_map = _inline(graph_def, call, fdef)
            except NotInlinable as exc:
                log.info("not inlining %s (%s): %s", call.name, fdef.signature.name, exc)
                continue
            inlined.append(call.name)
            source = arg_map[fdef.signature.input_arg[arg_index].name]
            todo.append((_node_of(source), _index_of(source), depth + 1))
    return inlined


def _node_of(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _index_of(tensor: str) -> int:
    parts = tensor.split(":")
    return int(parts[1]) if len(parts) > 1 else 0


def _consuming_calls(graph_def: Any, node_name: str, index: int) -> list[tuple[Any, int]]:
    """Call nodes reading output `index` of `node_name`, looking through Identity ops: (node, arg index)."""
    wanted = {(node_name, index)}
    found: list[tuple[Any, int]] = []
    changed = True
    while changed:  # close over Identity chains
        changed = False
        for node in graph_def.node:
            if (
                node.op == "Identity"
                and node.input
                and (_node_of(node.input[0]), _index_of(node.input[0])) in wanted
            ):
                if (node.name, 0) not in wanted:
                    wanted.add((node.name, 0))
                    changed = True
    for node in graph_def.node:
        if node.op not in CALL_OPS:
            continue
        for i, ref in enumerate(node.input):
            if not ref.startswith("^") and (_node_of(ref), _index_of(ref)) in wanted:
                found.append((node, i))
    return found


def _inline(graph_def: Any, call: Any, fdef: Any) -> dict[str, str]:
    """Splice fdef's body in place of `call`; returns {function arg name: outer tensor}."""
    from tensorflow.core.framework import node_def_pb2

    sig = fdef.signature
    for arg in list(sig.input_arg) + list(sig.output_arg):
        if arg.number_attr or arg.type_list_attr or arg.type_attr:
            raise NotInlinable(f"argument {arg.name!r} is polymorphic")
    data_inputs = [ref for ref in call.input if not ref.startswith("^")]
    control_inputs = [ref for ref in call.input if ref.startswith("^")]
    if len(data_inputs) != len(sig.input_arg):
        raise NotInlinable("argument count differs from the call's inputs")
    nested_to_flat = _flat_names(fdef)
    arg_map = {arg.name: ref for arg, ref in zip(sig.input_arg, data_inputs, strict=True)}
    existing = {n.name for n in graph_def.node}
    prefix = call.name + "/"
    while any(name.startswith(prefix) for name in existing):
        prefix = "_" + prefix

    def outer(ref: str) -> str:
        control = ref.startswith("^")
        name = _node_of(ref)
        if name in arg_map:
            if control:
                return "^" + _node_of(arg_map[name])
            return arg_map[name]
        return ("^" if control else "") + prefix + ref.lstrip("^")

    def flat(ref: str) -> str:
        if ref.startswith("^") or ":" not in ref:
            return ref
        if ref not in nested_to_flat:
            raise NotInlinable(f"unknown tensor {ref!r} in the body")
        return nested_to_flat[ref]

    new_nodes = []
    for node in fdef.node_def:
        copy = node_def_pb2.NodeDef()
        copy.CopyFrom(node)
        copy.name = prefix + node.name
        del copy.input[:]
        copy.input.extend(outer(flat(ref)) for ref in node.input)
        if control_inputs and not any(not r.startswith("^") for r in node.input):
            copy.input.extend(control_inputs)  # the call's control dependencies gate the whole body
        new_nodes.append(copy)
    results = []
    for out in sig.output_arg:
        results.append(outer(flat(fdef.ret[out.name])))
    controls = [
        outer("^" + fdef.control_ret[name]) for name in sig.control_output if name in fdef.control_ret
    ]
    replacement = node_def_pb2.NodeDef(name=call.name, op="IdentityN", device=call.device)
    replacement.input.extend(results + controls)
    replacement.attr["T"].list.type.extend(call.attr["Tout"].list.type)
    index = list(graph_def.node).index(call)
    del graph_def.node[index]
    graph_def.node.extend(new_nodes)
    graph_def.node.append(replacement)
    return arg_map


def _flat_names(fdef: Any) -> dict[str, str]:
    """FunctionDef tensor names ("node:output_arg:i") -> GraphDef names ("node:k"), from the op defs."""
    from tensorflow.python.framework import op_def_registry

    signatures = {}
    mapping: dict[str, str] = {}
    for node in fdef.node_def:
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            raise NotInlinable(f"node {node.name!r} runs {node.op!r}, not a registered op")
        signatures[node.name] = op_def
        k = 0
        for arg in op_def.output_arg:
            if arg.number_attr:
                count = node.attr[arg.number_attr].i
            elif arg.type_list_attr:
                count = len(node.attr[arg.type_list_attr].list.type)
            else:
                count = 1
            for i in range(count):
                mapping[f"{node.name}:{arg.name}:{i}"] = f"{node.name}:{k}"
                k += 1
    for arg in fdef.signature.input_arg:
        mapping[arg.name] = arg.name
    return mapping

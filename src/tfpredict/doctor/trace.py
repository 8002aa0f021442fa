"""Inside the model: its graph nodes by time in a traced call (`Predictor.trace`), grouped into categories
a person recognizes in their model (dense layers, embeddings, string hashing, example parsing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .results import OpTime

if TYPE_CHECKING:
    from ..predictor import Feeds, Predictor


#: Op types -> what a person recognizes in their model. Anything else is "other".
OP_CATEGORIES = {
    "dense layers": (
        "MatMul",
        "BatchMatMul",
        "BatchMatMulV2",
        "BiasAdd",
        "Relu",
        "Relu6",
        "Elu",
        "Selu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "_FusedMatMul",
        "Conv2D",
        "_FusedConv2D",
        "LeakyRelu",
    ),
    "embeddings / one-hot": (
        "OneHot",
        "SparseToDense",
        "Bincount",
        "DenseBincount",
        "GatherV2",
        "ResourceGather",
        "Gather",
        "SparseSegmentMean",
        "SparseSegmentSum",
        "SparseSegmentSqrtN",
        "SparseFillEmptyRows",
        "SparseReshape",
        "Unique",
        "SparseSegmentMeanWithNumSegments",
        "SparseSegmentSumWithNumSegments",
        "SparseSegmentSqrtNWithNumSegments",
        "SparseTensorDenseMatMul",
        "UniqueV2",
    ),
    "string hashing / vocabulary": (
        "StringToHashBucketFast",
        "StringToHashBucketStrong",
        "StringToHashBucket",
        "LookupTableFindV2",
        "LookupTableFind",
        "HashTableV2",
        "StringSplit",
        "StringSplitV2",
        "AsString",
        "StringJoin",
        "StaticRegexReplace",
        "RegexReplace",
        "StringLower",
        "Substr",
    ),
    "example parsing": ("ParseExample", "ParseExampleV2", "ParseSingleExample"),
}
_CATEGORY_OF = {op: cat for cat, ops in OP_CATEGORIES.items() for op in ops}
_NOT_WORK = {
    "_SOURCE",
    "_Recv",
    "_Send",
    "_Arg",
    "_Retval",
    "NoOp",
    "Const",
    "Placeholder",
    "VarHandleOp",
    "ReadVariableOp",
    "Identity",
    "VariableV2",
    "_HostRecv",
    "_HostSend",
}


def trace_ops(
    predictor: Predictor, feeds: Feeds, top: int = 12, runs: int = 3
) -> tuple[list[OpTime], dict[str, float]]:
    """The model's graph nodes by time for one call (mean of `runs`), from Predictor.trace's step stats.

    Returns the top nodes and the time per category ("dense layers", "embeddings / one-hot", ...) as shares
    of all traced op time.
    """
    totals: dict[str, float] = {}
    types: dict[str, str] = {}
    for node in predictor.trace(feeds, runs=runs):
        if node.op_type in _NOT_WORK or node.name.startswith("_"):
            continue
        totals[node.name] = node.ms
        types[node.name] = node.op_type
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    ops = [OpTime(n, types[n], _CATEGORY_OF.get(types[n], "other"), ms, ms / whole) for n, ms in ranked[:top]]
    categories: dict[str, float] = {}
    for n, ms in totals.items():
        cat = _CATEGORY_OF.get(types[n], "other")
        categories[cat] = categories.get(cat, 0.0) + ms / whole
    return ops, dict(sorted(categories.items(), key=lambda kv: -kv[1]))

"""The data side of dynamic batching: merging requests into one batch (padding inner dimensions when
pad_variable_length_inputs is on), growing a batch to an allowed size, cutting a request too large for one
model call into parts (enable_large_batch_splitting), and cutting a batch's outputs back into answers.

A request's data is a dict of arrays sharing a first (batch) dimension, or a list of feature-row dicts."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

Outputs = dict[str, np.ndarray]


def merge(items: list[Any], pad_inner: bool = False) -> Any:
    """Concatenate the inputs of several tasks along the batch dimension; with `pad_inner`, arrays whose
    other dimensions differ are first padded at their end to the largest, with their own first value
    (TF Serving's PadTensor)."""
    if len(items) == 1:
        return items[0]
    if isinstance(items[0], list):
        return [row for item in items for row in item]
    if pad_inner:
        return {k: np.concatenate(_padded([item[k] for item in items])) for k in items[0]}
    return {k: np.concatenate([item[k] for item in items]) for k in items[0]}


def _padded(arrays: list[np.ndarray]) -> list[np.ndarray]:
    if arrays[0].ndim < 2 or len({a.shape[1:] for a in arrays}) == 1:
        return arrays
    inner = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    out = []
    for a in arrays:
        widths = [(0, 0)] + [(0, m - s) for s, m in zip(a.shape[1:], inner, strict=True)]
        if any(w for _, w in widths):
            fill = a.flat[0] if a.size else 0
            a = np.pad(a, widths, mode="constant", constant_values=fill)
        out.append(a)
    return out


def group_of(key: Hashable, pad_inner: bool) -> Hashable:
    """The key by which tasks may share a batch: the call key, or with `pad_inner` the call key with each
    input's inner shape replaced by its rank (inference.tensors_call's key: kind, signature, outputs,
    ((name, dtype, inner shape), ...))."""
    if not pad_inner or not isinstance(key, tuple) or len(key) < 4 or key[0] != "tensors":
        return key
    layout = tuple((name, dtype, len(shape)) for name, dtype, shape in key[3])
    return (*key[:3], layout, *key[4:])


def pad(data: Any, size: int, target: int) -> Any:
    """Grow a batch to an allowed size by repeating its first row (the padding rows are dropped later)."""
    extra = target - size
    if extra <= 0:
        return data
    if isinstance(data, list):
        return data + [data[0]] * extra
    return {k: np.concatenate([v, np.repeat(v[:1], extra, axis=0)]) for k, v in data.items()}


def allowed_size(size: int, allowed: tuple[int, ...]) -> int:
    """The smallest allowed batch size that holds `size` rows (`size` itself when none is given)."""
    for s in allowed:
        if s >= size:
            return s
    return size


def parts(data: Any, size: int, limit: int) -> list[tuple[Any, int]]:
    """A request of `size` rows as parts of at most `limit` rows each: (data, rows) in order."""
    out: list[tuple[Any, int]] = []
    for start in range(0, size, limit):
        stop = min(size, start + limit)
        if isinstance(data, list):
            out.append((data[start:stop], stop - start))
        else:
            out.append(({k: v[start:stop] for k, v in data.items()}, stop - start))
    return out


def join(answers: list[Outputs], sizes: list[int]) -> Outputs:
    """The parts' outputs as one request's: outputs with a batch dimension concatenated, others as the
    first part has them."""
    first = answers[0]
    out = {}
    for k, v in first.items():
        batched = all(
            getattr(a[k], "ndim", 0) and a[k].shape[0] == n for a, n in zip(answers, sizes, strict=True)
        )
        out[k] = np.concatenate([a[k] for a in answers]) if batched else v
    return out


def split(outputs: Outputs, sizes: list[int], total: int) -> list[Outputs]:
    """One output dict per task: each output with the batch's first dimension is sliced."""
    if len(sizes) == total:  # one row each (the usual single-row requests): views of each row
        rows = {
            k: list(v[:, None]) if getattr(v, "ndim", 0) and v.shape[0] == total else None
            for k, v in outputs.items()
        }
        return [{k: (r[i] if r is not None else outputs[k]) for k, r in rows.items()} for i in range(total)]
    cut = []
    offset = 0
    for size in sizes:
        cut.append(
            {
                k: v[offset : offset + size] if getattr(v, "ndim", 0) and v.shape[0] == total else v
                for k, v in outputs.items()
            }
        )
        offset += size
    return cut

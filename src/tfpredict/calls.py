"""Helpers of a model call that need no Predictor state: feed arrays from a caller's values, TensorFlow's
errors as ours, op types of traced nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import features as F
from .errors import InputError, PredictionError


def op_type(graph: Any, name: str, timeline_label: str) -> str:
    try:
        return str(graph.get_operation_by_name(name).type)
    except (KeyError, ValueError):  # a node the runtime added (e.g. _Send): its label says "name = Op(...)"
        return timeline_label.split("(")[0].split("=")[-1].strip() if "=" in timeline_label else name


def as_feed(value: Any, dtype: str, key: str) -> np.ndarray:
    np_dtype = F.NUMPY_DTYPES.get(dtype)
    try:
        array = (
            np.asarray(value, dtype=np_dtype) if np_dtype is not object else np.asarray(value, dtype=object)
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"Input {key!r}: expects {dtype}, found values it cannot read ({exc})") from exc
    return array


def prediction_error(export_dir: Path, signature: str, exc: Exception) -> Exception:
    import tensorflow as tf

    first = str(getattr(exc, "message", exc)).strip().splitlines()
    text = first[0] if first else type(exc).__name__
    if isinstance(exc, tf.errors.InvalidArgumentError):
        return InputError(f"Signature {signature!r} of {export_dir} rejected the input: {text}")
    return PredictionError(f"Signature {signature!r} of {export_dir} failed: {text}")

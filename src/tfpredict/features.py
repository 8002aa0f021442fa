"""Table columns (Arrow / numpy / pandas) -> feed arrays for each feature of a model's input schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureSpec:
    """One input a user supplies: a parsed tf.Example feature, or a raw signature tensor.

    kind: "dense" (FixedLenFeature), "varlen" (VarLenFeature: 0..n values per row), or "tensor" (a raw
    signature input fed as is). dtype is a TensorFlow dtype name ("float32", "int64", "string", ...).
    shape is the per-row shape ((), (3,), ...; None for an unknown dimension). default is the value a
    missing dense feature takes (a scalar or a flat list), or None when the feature is required.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    kind: str
    default: Any = None

    @property
    def required(self) -> bool:
        return self.kind in ("dense", "tensor") and self.default is None

    def describe(self) -> str:
        shape = "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        text = f"{self.name}: {self.dtype}{shape} {self.kind}"
        if self.kind == "dense":
            text += " (required)" if self.default is None else f" (default {self.default!r})"
        return text

"""`tfpredict inspect`: what an export takes and gives, as plain data (and as text for a terminal)."""

from __future__ import annotations

import os
from typing import Any

from .predictor import Predictor


def describe(
    export: str | os.PathLike[str], signature: str | None = None, tags: list[str] | None = None
) -> dict[str, Any]:
    """Signatures, the feature schema of each, outputs, the path predict() takes and why, and what was
    rewritten at load."""
    predictor = Predictor.load(export, signature=signature, tags=tags)
    try:
        sigs = {}
        for name, sig in sorted(predictor.signatures.items()):
            sigs[name] = {
                "method_name": sig.method_name,
                "path": predictor.path_for(name),
                "path_reason": predictor.path_reason_for(name),
                "inputs": {k: _tensor(v) for k, v in sig.inputs.items()},
                "features": {
                    k: {
                        "dtype": f.dtype,
                        "shape": list(f.shape),
                        "kind": f.kind,
                        "default": f.default,
                        "required": f.required,
                    }
                    for k, f in predictor.inputs_for(name).items()
                },
                "outputs": {k: _tensor(v) for k, v in sig.outputs.items()},
            }
        return {
            "export_dir": str(predictor.export_dir),
            "version": predictor.version,
            "default_signature": predictor.signature,
            "path": predictor.path,
            "tags": predictor.tags,
            "written_by": predictor.producer or None,
            "rewrites": predictor.rewrites,
            "inlined_calls": predictor.inlined,
            "signatures": sigs,
        }
    finally:
        predictor.close()


def _tensor(info: Any) -> dict[str, Any]:
    return {"dtype": info.dtype, "shape": None if info.shape is None else list(info.shape)}


def format_description(info: dict[str, Any]) -> str:
    lines = [
        f"export:    {info['export_dir']}"
        + (f" (version {info['version']})" if info["version"] is not None else ""),
        f"default:   {info['default_signature']} (path: {info['path']})",
        f"tags:      [{', '.join(info['tags'])}]"
        + (f", written by TensorFlow {info['written_by']}" if info["written_by"] else ""),
    ]
    for rewrite in info["rewrites"]:
        lines.append(f"rewrite:   {rewrite}")
    lines.append("")
    for name, sig in info["signatures"].items():
        lines.append(f"signature {name!r}  [{sig['method_name']}]  path: {sig['path']}")
        lines.append(f"  why:  {sig['path_reason']}")
        lines.append("  features:")
        for key, f in sig["features"].items():
            shape = "[" + ",".join("?" if d is None else str(d) for d in f["shape"]) + "]"
            note = (
                "required"
                if f["required"]
                else ("optional" if f["kind"] == "varlen" else f"default {f['default']!r}")
            )
            lines.append(f"    {key:<24} {f['dtype']:<8} {shape:<8} {f['kind']:<7} {note}")
        lines.append("  outputs:")
        for key, o in sig["outputs"].items():
            shape = (
                "?"
                if o["shape"] is None
                else "[" + ",".join("?" if d is None else str(d) for d in o["shape"]) + "]"
            )
            lines.append(f"    {key:<24} {o['dtype']:<8} {shape}")
        lines.append("")
    return "\n".join(lines).rstrip()

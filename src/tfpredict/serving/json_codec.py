"""TF Serving's REST JSON (util/json_tensor.cc) <-> numpy arrays, parsed and written with orjson.

Requests: {"instances": [...]} (rows) or {"inputs": ...} (columns) for :predict, {"examples": [...],
"context": {...}} for :classify / :regress, with {"b64": "..."} for binary strings and NaN / Infinity
accepted. Responses: {"predictions": ...} / {"outputs": ...} / {"results": ...} / {"error": "..."}.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import orjson
from tensorflow.core.example import example_pb2, feature_pb2

from ..features import NUMPY_DTYPES
from .status import invalid

_JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def loads(body: bytes) -> dict[str, Any]:
    """Parse a request body; NaN and Infinity are accepted as TF Serving does."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            doc = json.loads(body)  # the standard parser accepts NaN / Infinity / -Infinity
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested deeper than Python's stack
            raise invalid(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {_short(doc)} Is not object")
    return doc


def signature_name(doc: dict[str, Any]) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(
            f"JSON Value: {_short(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


# ---------------------------------------------------------------------------------------------- predict
def predict_format(doc: dict[str, Any]) -> str:
    """ "row" for instances, "columnar" for inputs."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid(
            f"JSON Value: {_short(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {_short(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {_short(doc)} No values in 'instances' array")
        return "row"
    if has_inputs:
        return "columnar"
    raise invalid("Missing 'inputs' or 'instances' key")


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def instances_are_objects(instances: list[Any]) -> bool:
    first = instances[0]
    return isinstance(first, dict) and not is_b64(first)


def decode_instances(instances: list[Any], input_dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """Row format: one list item per row, stacked into one array per named input."""
    names = sorted(input_dtypes)
    if not instances_are_objects(instances):
        if len(names) > 1:
            raise invalid(
                "instances is a plain list, but expecting list of objects as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name = names[0]
        for i, item in enumerate(instances):
            if isinstance(item, dict) and not is_b64(item):
                raise invalid(f"Expecting value/list but got object at item {i} of input list")
        return {name: to_array(instances, input_dtypes[name], name, rows=True)}
    columns: dict[str, list[Any]] = {n: [] for n in names}
    wanted = set(names)
    for i, item in enumerate(instances):
        if not isinstance(item, dict) or is_b64(item):
            raise invalid(f"Expecting object but got list at item {i} of input list")
        if item.keys() != wanted:
            unknown = sorted(set(item) - wanted)
            if unknown:
                raise invalid(
                    f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. "
                    f"Error: JSON object: does not have named input: {unknown[0]}"
                )
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. JSON object: {_short(item)} "
                f"keys must be equal to: {','.join(names)}"
            )
        for n in names:
            columns[n].append(item[n])
    return {n: to_array(columns[n], input_dtypes[n], n, rows=True) for n in names}


def decode_inputs(value: Any, input_dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """Columnar format: one value (single input) or an object of name -> tensor."""
    names = sorted(input_dtypes)
    if not isinstance(value, dict) or is_b64(value):
        if len(names) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: to_array(value, input_dtypes[names[0]], names[0])}
    result = {}
    for n in names:
        if n not in value:
            raise invalid(f"Missing named input: {n} in 'inputs' object.")
        result[n] = to_array(value[n], input_dtypes[n], n)
    return result


def to_array(value: Any, dtype: str, name: str, rows: bool = False) -> np.ndarray:
    """A (nested) JSON list -> a dense array of the signature's dtype, checked the way TF Serving checks."""
    where = f"input {name!r}"
    if dtype == "string":
        return _string_array(value, where)
    target = NUMPY_DTYPES.get(dtype)
    if target is None:
        raise invalid(f"Conversion of JSON values to type: {dtype} is not supported ({where})")
    try:
        arr = np.asarray(value)
    except ValueError:
        raise invalid(f"{where}: lists of different lengths; a tensor must be dense (rectangular)") from None
    kind = np.dtype(target).kind
    if arr.dtype.kind not in _JSON_KINDS[kind] or arr.dtype == object:
        sample = _first_leaf(value)
        raise invalid(
            f"JSON Value: {_short(sample)} Type: {_json_type(sample)} is not of expected type: {dtype} "
            f"({where})"
        )
    if rows and arr.ndim == 0:
        arr = arr.reshape(1)
    try:
        return arr.astype(target, copy=False)
    except (OverflowError, ValueError) as exc:
        raise invalid(f"{where}: {exc}") from None


def _string_array(value: Any, where: str) -> np.ndarray:
    def conv(v: Any) -> Any:
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, str):
            return v.encode("utf-8")
        if is_b64(v):
            return b64decode(v["b64"])
        if isinstance(v, dict):
            raise invalid(f"JSON Value: {_short(v)} not formatted correctly for base64 data")
        raise invalid(
            f"JSON Value: {_short(v)} Type: {_json_type(v)} is not of expected type: string ({where})"
        )

    converted = conv(value)
    try:
        arr = np.array(converted, dtype=object)
    except ValueError:
        raise invalid(f"{where}: lists of different lengths; a tensor must be dense (rectangular)") from None
    if arr.ndim and any(isinstance(x, list) for x in arr.flat):
        raise invalid(f"{where}: lists of different lengths; a tensor must be dense (rectangular)")
    return arr


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # TF Serving also takes the URL-safe alphabet and missing padding
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode") from None


# ---------------------------------------------------------------------------------- classify / regress
def decode_examples(doc: dict[str, Any], method: str) -> list[dict[str, Any]]:
    """The "examples" rows (with "context" merged in), values as JSON gave them, b64 decoded."""
    context = doc.get("context")
    if context is not None and not isinstance(context, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(context)}")
    if "examples" not in doc:
        raise invalid(
            f"JSON Value: {_short(doc)} When method is {method}, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {_short(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {_short(doc)} 'examples' value is an empty array")
    rows = []
    ctx = _example_values(context) if context else None
    for ex in examples:
        if not isinstance(ex, dict):
            raise invalid(f"Example must be JSON object but got JSON {_json_type(ex)}")
        row = _example_values(ex)
        rows.append({**ctx, **row} if ctx else row)
    return rows


_PLAIN = (float, int, str)


def _example_values(obj: dict[str, Any]) -> dict[str, Any]:
    if all(type(v) in _PLAIN for v in obj.values()):  # the common case: one scalar per feature
        return obj
    out = {}
    for k, v in obj.items():
        if isinstance(v, list):
            out[k] = [_feature_value(x, k) for x in v]
        else:
            out[k] = _feature_value(v, k)
    return out


def _feature_value(v: Any, name: str) -> Any:
    if isinstance(v, dict):
        if is_b64(v):
            return b64decode(v["b64"])
        raise invalid(f"Feature: {name} has element with unexpected JSON type: Object")
    if v is None or isinstance(v, list):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}")
    return v


def rows_to_examples(rows: list[dict[str, Any]], specs: dict[str, Any] | None = None) -> np.ndarray:
    """Serialized tf.Examples from JSON rows: typed by the model's feature specs when known (so 3 feeds a
    float feature as the fast path would), else by TF Serving's rules (float, int64 or bytes lists)."""
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        ex = example_pb2.Example()
        fmap = ex.features.feature
        for name, value in row.items():
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            spec = specs.get(name) if specs else None
            if spec is None:
                if specs is not None:
                    continue  # a column the model does not read
                fmap[name].CopyFrom(_feature(values, name))
            else:
                _typed_feature(fmap[name], values, spec.dtype, name)
        out[i] = ex.SerializeToString()
    return out


def _typed_feature(f: feature_pb2.Feature, values: list[Any], dtype: str, name: str) -> None:
    try:
        if dtype.startswith("float"):
            f.float_list.value.extend(float(v) for v in values)
        elif dtype.startswith("int") or dtype == "bool":
            ints = [int(v) for v in values]
            if any(isinstance(v, float) and v != int(v) for v in values):
                raise ValueError("not a whole number")
            f.int64_list.value.extend(ints)
        else:
            f.bytes_list.value.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values)
    except (TypeError, ValueError) as exc:
        raise invalid(f"Feature {name!r} expects {dtype} values; got {_short(values)} ({exc})") from None


def _feature(values: list[Any], name: str) -> feature_pb2.Feature:
    f = feature_pb2.Feature()
    if not values:
        return f
    kinds = {_kind(v) for v in values}
    if len(kinds) > 1:
        raise invalid(f"Unexpected element type in feature: {name} expecting type: {_kind(values[0])}")
    kind = kinds.pop()
    if kind == "float":
        f.float_list.value.extend(values)
    elif kind == "int64":
        f.int64_list.value.extend(int(v) for v in values)
    else:
        f.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else v for v in values)
    return f


def _kind(v: Any) -> str:
    if isinstance(v, bool) or isinstance(v, int):
        return "int64"
    if isinstance(v, float):
        return "float"
    return "bytes"


# ---------------------------------------------------------------------------------------------- encode
def encode_predict(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    values = {k: _jsonable(k, v) for k, v in outputs.items()}
    if fmt == "row":
        sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
        for k, n in sizes.items():
            if n is None:
                raise invalid(f"Tensor name: {k} has no shape information ")
        if len(set(sizes.values())) > 1:
            k, n = next(iter(sizes.items()))
            other = next(name for name, m in sizes.items() if m != n)
            raise invalid(f"Tensor name: {other} has inconsistent batch size: {sizes[other]} expecting: {n}")
        if len(values) == 1:
            doc: dict[str, Any] = {"predictions": next(iter(values.values()))}
        else:
            n = next(iter(sizes.values())) or 0
            doc = {"predictions": [{k: v[i] for k, v in values.items()} for i in range(n)]}
    else:
        doc = {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    return dumps(doc, outputs.values())


def encode_classify(results: list[list[tuple[str, float]]]) -> bytes:
    return dumps({"results": [[[label, score] for label, score in row] for row in results]})


def encode_regress(values: np.ndarray) -> bytes:
    return dumps({"results": values})


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def dumps(doc: Any, arrays: Any = ()) -> bytes:
    """orjson, except when a float is NaN or infinite: TF Serving writes those as bare NaN / Infinity."""
    for a in arrays:
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return json.dumps(_plain(doc), allow_nan=True, separators=(",", ":")).encode()
    try:
        return orjson.dumps(doc, option=_ORJSON_OPTS)
    except TypeError:
        return json.dumps(_plain(doc), allow_nan=True, separators=(",", ":")).encode()


def _plain(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_plain(v) for v in doc]
    if isinstance(doc, np.ndarray):
        return doc.tolist()
    if isinstance(doc, np.generic):
        return doc.item()
    return doc


def _jsonable(name: str, arr: np.ndarray) -> Any:
    """An array orjson can write: strings decoded (or b64 for outputs named *_bytes), odd dtypes widened."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    if kind in "OSU":
        as_b64 = name.endswith("_bytes")

        def conv(v: Any) -> Any:
            if isinstance(v, bytes):
                return {"b64": base64.b64encode(v).decode()} if as_b64 else v.decode("utf-8", "replace")
            return v if isinstance(v, str) else str(v)

        if arr.ndim == 0:
            return conv(arr.item())
        return _map_nested(arr.tolist(), conv)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def _map_nested(v: Any, fn: Any) -> Any:
    if isinstance(v, list):
        return [_map_nested(x, fn) for x in v]
    return fn(v)


def _first_leaf(v: Any) -> Any:
    while isinstance(v, list) and v:
        v = v[0]
    return v


def _json_type(v: Any) -> str:
    if v is None:
        return "Null"
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (int, float)):
        return "Number"
    if isinstance(v, str):
        return "String"
    if isinstance(v, list):
        return "Array"
    return "Object"


def _short(v: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(v, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."

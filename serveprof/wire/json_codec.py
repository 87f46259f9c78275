"""TF Serving's REST predict JSON (tensorflow_serving/util/json_tensor.cc) <-> numpy.

Requests: the row format (``instances``) or the columnar format (``inputs``), with
``{"b64": ...}`` for binary strings and NaN/Infinity accepted as TF Serving accepts
them. Numbers are turned into arrays by numpy from the parsed lists (C loops, not
Python ones); only string tensors are walked in Python, as their values need decoding.
Responses: ``predictions`` (row) or ``outputs`` (columnar), written by orjson straight
from the arrays; outputs whose names end in ``_bytes`` go out as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import orjson

from serveprof.wire.status import invalid_argument
from serveprof.wire.tensor_codec import STRING

ROW, COLUMNAR = "row", "columnar"
_DEBUG_CHARS = 200


def parse_json(body: bytes) -> Any:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as strict_error:
        # TF Serving's parser also takes NaN, Infinity and out-of-range numbers, which
        # strict JSON (orjson) refuses; the standard library's parser takes them too.
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise invalid_argument(f"JSON Parse error: {strict_error}") from None


def debug_text(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= _DEBUG_CHARS else text[:_DEBUG_CHARS] + "..."


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def decode_predict_body(body: bytes, input_specs: Callable[[str], dict]) -> tuple[str, dict[str, np.ndarray], str]:
    """Return ``(signature_name, arrays, format)`` for a REST predict body.

    ``input_specs(signature_name)`` gives the signature's ``{input: TensorSpec}`` and
    raises the proper error for an unknown model or signature; as in TF Serving, it is
    consulted only after the body has parsed.
    """
    doc = parse_json(body)
    # numpy turns true/false among numbers into 1/0 without a trace; only a body that has
    # the words at all is walked value by value to find them (TF Serving refuses them).
    may_hold_bools = b"true" in body or b"false" in body
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {debug_text(doc)} Is not object")
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid_argument(
            f"JSON Value: {debug_text(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    specs = input_specs(signature_name or "serving_default")
    if not specs:
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise invalid_argument(
                f"JSON Value: {debug_text(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {debug_text(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {debug_text(doc)} No values in 'instances' array")
        return signature_name, _from_instances(instances, specs, may_hold_bools), ROW
    if "inputs" in doc:
        return signature_name, _from_inputs(doc["inputs"], specs, may_hold_bools), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _from_instances(instances: list, specs: dict, may_hold_bools: bool) -> dict[str, np.ndarray]:
    first_is_object = isinstance(instances[0], dict) and not is_b64(instances[0])
    if not first_is_object and len(specs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map"
        )
    if not first_is_object:
        name = next(iter(specs))
        for index, item in enumerate(instances):
            if isinstance(item, dict) and not is_b64(item):
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
        return {name: to_ndarray(instances, specs[name], name, "'instances' list", may_hold_bools)}
    columns: dict[str, list] = {name: [] for name in specs}
    for index, item in enumerate(instances):
        if not isinstance(item, dict) or is_b64(item):
            raise invalid_argument(f"Expecting object but got list at item {index} of input list")
        if set(item) != set(specs):
            unknown = sorted(set(item) - set(specs))
            if unknown:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {unknown[0]} of 'instances' list. "
                    f"Error: JSON object: does not have named input: {unknown[0]}"
                )
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{debug_text(item)} keys must be equal to: {','.join(sorted(specs))}"
            )
        for name in specs:
            columns[name].append(item[name])
    return {
        name: to_ndarray(values, specs[name], name, "'instances' list", may_hold_bools)
        for name, values in columns.items()
    }


def _from_inputs(value: Any, specs: dict, may_hold_bools: bool) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or is_b64(value):
        if len(specs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple "
                "input tensors required as per tensorinfo_map"
            )
        name = next(iter(specs))
        return {name: to_ndarray(value, specs[name], name, "'inputs'", may_hold_bools)}
    arrays = {}
    for name, spec in specs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = to_ndarray(value[name], spec, name, "'inputs' object", may_hold_bools)
    return arrays


def to_ndarray(value: Any, spec, name: str, where: str, may_hold_bools: bool = True) -> np.ndarray:
    """The dense tensor a nested JSON list describes, in the signature's dtype.

    ``may_hold_bools`` false promises that no true/false is among the values, which
    spares a numeric input the walk over its values that finds them.
    """
    if spec.dtype is None:
        raise invalid_argument(f"Conversion of JSON to type: {spec.dtype_enum} is not supported (input {name})")
    if spec.dtype.enum == STRING:
        return _strings(value, name, where)
    try:
        parsed = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise _not_dense(name, where) from None
    target = spec.dtype.numpy
    kind = parsed.dtype.kind
    if parsed.size == 0 and kind in "biuf":  # [] is float64 to numpy, whatever the dtype asked for
        return np.empty(parsed.shape, target)
    if kind in "iuf" and target != np.bool_ and may_hold_bools and _first_bad_leaf(value, spec) is not _MISSING:
        raise _type_error(value, spec, name, where)
    if target == np.bool_:
        ok = kind == "b"
    elif target.kind in "iu":
        ok = kind in "iu" and _fits(parsed, target)
    else:  # floating point (and complex, which TF Serving does not take as JSON)
        ok = kind in "iuf" and (target.kind == "f" or target == ml_dtypes.bfloat16)
    if not ok:
        if kind == "O" and _ragged(value):
            raise _not_dense(name, where)
        raise _type_error(value, spec, name, where)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e39 as float32 is inf, as in TF Serving
        return parsed.astype(target, copy=False)


def _fits(parsed: np.ndarray, target: np.dtype) -> bool:
    info = np.iinfo(target)
    return bool(parsed.min() >= info.min and parsed.max() <= info.max)


def _ragged(value: Any) -> bool:
    """True if ``value`` is nested lists of uneven lengths (numpy then builds an object array)."""
    if not isinstance(value, list):
        return False
    lengths = {len(item) if isinstance(item, list) else -1 for item in value}
    return len(lengths) > 1 or any(_ragged(item) for item in value[:1])


def _not_dense(name: str, where: str):
    return invalid_argument(
        f"Failed to process {where} for input {name}: the nested lists do not form a dense "
        "tensor (every list at the same depth must have the same length)"
    )


def _type_error(value: Any, spec, name: str, where: str):
    leaf = _first_bad_leaf(value, spec)
    shown = leaf if leaf is not _MISSING else value
    return invalid_argument(
        f"Failed to process {where} for input {name}. Error: JSON Value: {debug_text(shown)} "
        f"Type: {json_type(shown)} is not of expected type: {spec.dtype.name}"
    )


_MISSING = object()


def _first_bad_leaf(value: Any, spec) -> Any:
    stack = [value]
    target = spec.dtype.numpy
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack[:0] = item
            continue
        if target == np.bool_:
            good = isinstance(item, bool)
        elif target.kind in "iu":
            good = isinstance(item, int) and not isinstance(item, bool) and _int_fits(item, target)
        else:
            good = isinstance(item, (int, float)) and not isinstance(item, bool)
        if not good:
            return item
    return _MISSING


def _int_fits(item: int, target: np.dtype) -> bool:
    info = np.iinfo(target)
    return info.min <= item <= info.max


def _strings(value: Any, name: str, where: str) -> np.ndarray:
    """Walk a nested list of strings / {"b64": ...}, checking it is dense as json_tensor.cc does."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        probe = probe[0] if probe else None
    flat: list[bytes] = []

    def walk(item: Any, level: int) -> None:
        if isinstance(item, list):
            if level >= len(shape) or len(item) != shape[level]:
                raise _not_dense(name, where)
            for child in item:
                walk(child, level + 1)
            return
        if level != len(shape):
            raise _not_dense(name, where)
        if isinstance(item, str):
            flat.append(item.encode("utf-8"))
        elif is_b64(item) and isinstance(item["b64"], str):
            try:
                flat.append(base64.b64decode(item["b64"], validate=True))
            except (binascii.Error, ValueError):
                raise invalid_argument(
                    f"Failed to process {where} for input {name}. Error: Unable to base64 decode"
                ) from None
        elif isinstance(item, dict):
            raise invalid_argument(
                f"Failed to process {where} for input {name}. Error: JSON Value: {debug_text(item)} "
                "not formatted correctly for base64 data"
            )
        else:
            raise invalid_argument(
                f"Failed to process {where} for input {name}. Error: JSON Value: {debug_text(item)} "
                f"Type: {json_type(item)} is not of expected type: string"
            )

    walk(value, 0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


# ------------------------------------------------------------------ responses


def encode_predict_response(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    values = {name: jsonable(name, array) for name, array in outputs.items()}
    if fmt == COLUMNAR:
        payload = {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    else:
        batch = None
        for name, array in outputs.items():
            if array.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch is not None and array.shape[0] != batch:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
                )
            batch = array.shape[0]
        if len(values) == 1:
            payload = {"predictions": next(iter(values.values()))}
        else:
            payload = {"predictions": [{name: value[row] for name, value in values.items()} for row in range(batch)]}
    if all(_finite(array) for array in outputs.values()):
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    # orjson writes NaN and Infinity as null; TF Serving writes the bare tokens.
    return json.dumps(payload, default=lambda array: array.tolist()).encode()


def _finite(array: np.ndarray) -> bool:
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def jsonable(name: str, array: np.ndarray):
    """What orjson can write for ``array``: the array itself for plain numbers."""
    if array.dtype == object:  # DT_STRING
        if name.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object])(array).tolist()
        return np.vectorize(lambda b: b.decode("utf-8", errors="replace"), otypes=[object])(array).tolist()
    if array.dtype == ml_dtypes.bfloat16 or array.dtype.kind == "c":
        if array.dtype.kind == "c":
            raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype.name}")
        array = array.astype(np.float32)
    return np.ascontiguousarray(array)

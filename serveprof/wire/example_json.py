"""TF Serving's REST classify and regress JSON (tensorflow_serving/util/json_tensor.cc) <-> protos.

A request is ``{"signature_name": ..., "context": {...}, "examples": [{feature: value
or [values]}, ...]}``; each object becomes a ``tensorflow.Example`` whose features are
typed by their JSON values as json_tensor.cc types them: a number with a fraction or
an exponent is a float_list, a whole number an int64_list, true/false an int64_list of
1/0, a string or ``{"b64": ...}`` a bytes_list. Answers are ``{"results": ...}``:
``[[[label, score], ...], ...]`` for classify, ``[value, ...]`` for regress.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import orjson

from serveprof.wire.json_codec import debug_text, is_b64, json_type, parse_json
from serveprof.wire.status import invalid_argument

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


def fill_request(body: bytes, request) -> None:
    """Fill a ClassificationRequest or RegressionRequest from a REST body (FillClassifyRegressRequestFromJson)."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {debug_text(doc)} Is not object")
    if "signature_name" in doc:
        if not isinstance(doc["signature_name"], str):
            raise invalid_argument(
                f"JSON Value: {debug_text(doc)} not formatted correctly. 'signature_name' key must be a string value."
            )
        request.model_spec.signature_name = doc["signature_name"]
    target = request.input.example_list
    if "context" in doc:
        _fill_example(doc["context"], request.input.example_list_with_context.context)
        target = request.input.example_list_with_context
    if "examples" not in doc:
        # json_tensor.cc says "classify" for regress requests too.
        raise invalid_argument(
            f"JSON Value: {debug_text(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {debug_text(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {debug_text(doc)} 'examples' value is an empty array")
    for value in examples:
        _fill_example(value, target.examples.add())


def _fill_example(value: Any, example) -> None:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        feature.Clear()
        for item in content if isinstance(content, list) else [content]:
            _add_value(item, name, feature)


def _kind_error(name: str, feature):
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind"), "UNKNOWN"
    )
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_value(value: Any, name: str, feature) -> None:
    """AddValueToFeature: one JSON value into ``feature``, whose kind the first value fixed."""
    kind = feature.WhichOneof("kind")

    def into(wanted: str):
        if kind not in (None, wanted):
            raise _kind_error(name, feature)
        return getattr(feature, wanted).value

    if value is None or isinstance(value, list):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if isinstance(value, bool):
        into("int64_list").append(1 if value else 0)
    elif isinstance(value, dict):
        if not is_b64(value) or not isinstance(value["b64"], str):
            raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
        values = into("bytes_list")
        try:
            values.append(base64.b64decode(value["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise invalid_argument("Unable to base64 decode") from None
    elif isinstance(value, str):
        into("bytes_list").append(value.encode("utf-8"))
    elif isinstance(value, float) or value > _UINT64_MAX or value < _INT64_MIN:
        # rapidjson holds whole numbers beyond 64 bits as doubles.
        into("float_list").append(float(value))
    elif value > _INT64_MAX:
        raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    else:
        into("int64_list").append(value)


def classification_json(result) -> bytes:
    """MakeJsonFromClassificationResult: ``{"results": [[[label, score], ...], ...]}``."""
    if not len(result.classifications):
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    results = [
        [[klass.label, np.float32(klass.score)] for klass in classifications.classes]
        for classifications in result.classifications
    ]
    return _dumps({"results": results})


def regression_json(result) -> bytes:
    """MakeJsonFromRegressionResult: ``{"results": [value, ...]}``."""
    if not len(result.regressions):
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return _dumps({"results": [np.float32(regression.value) for regression in result.regressions]})


def _dumps(payload: dict) -> bytes:
    """float32 values in their shortest form, as WriteDecimal writes them; NaN and Infinity as bare tokens."""
    text = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" not in text:
        return text
    return json.dumps(payload, default=float).encode()  # orjson wrote a non-finite score as null

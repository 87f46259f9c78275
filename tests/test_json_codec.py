"""REST predict JSON -> arrays (serveprof.wire.json_codec): the edge cases TF Serving defines."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serveprof.server.signature_runner import TensorSpec
from serveprof.wire.json_codec import decode_predict_body
from serveprof.wire.status import ServingError
from serveprof.wire.tensor_codec import DTYPES

FLOAT, INT32, INT64, BOOL, UINT8 = (DTYPES[number] for number in (1, 3, 9, 10, 4))


def decode(doc, dtype, shape=None):
    specs = {"x": TensorSpec(dtype, dtype.enum, shape)}
    return decode_predict_body(orjson.dumps(doc), lambda signature: specs)[1]["x"]


@pytest.mark.parametrize("dtype", [FLOAT, INT32, INT64, BOOL, UINT8])
def test_an_empty_list_is_an_empty_tensor_of_the_signatures_dtype(dtype):
    array = decode({"inputs": {"x": []}}, dtype)
    assert array.shape == (0,) and array.dtype == dtype.numpy


@pytest.mark.parametrize(
    "dtype, values", [(FLOAT, [[1.0, True]]), (FLOAT, [False, 2.5]), (INT32, [1, True]), (INT64, [[True], [2]])]
)
def test_booleans_among_numbers_are_refused(dtype, values):
    with pytest.raises(ServingError) as raised:
        decode({"instances": values}, dtype)
    assert f"is not of expected type: {dtype.name}" in raised.value.message
    assert "Type: True" in raised.value.message or "Type: False" in raised.value.message


def test_numbers_are_taken_when_true_or_false_appear_only_as_words_elsewhere():
    # "true" in the signature name sends the body down the careful path; its numbers still pass.
    specs = {"x": TensorSpec(FLOAT, FLOAT.enum, None)}
    body = orjson.dumps({"signature_name": "true_or_false", "instances": [[1, 2.5]]})
    array = decode_predict_body(body, lambda signature: specs)[1]["x"]
    np.testing.assert_array_equal(array, np.array([[1.0, 2.5]], np.float32))


def test_booleans_for_a_bool_input_and_numbers_for_numbers():
    np.testing.assert_array_equal(decode({"instances": [True, False]}, BOOL), [True, False])
    np.testing.assert_array_equal(decode({"instances": [[1, 2], [3, 4]]}, INT32), np.array([[1, 2], [3, 4]], np.int32))
    with pytest.raises(ServingError, match="is not of expected type: bool"):
        decode({"instances": [1, 0]}, BOOL)
    with pytest.raises(ServingError, match="is not of expected type: uint8"):
        decode({"instances": [1, 256]}, UINT8)

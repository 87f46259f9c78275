"""The server's formats without a server: TensorProtos as TensorFlow writes and reads them, the REST
classify/regress JSON, the BatchingParameters file, the Session config and the response-serialisation flag.

TensorFlow's own C++ parser (``tf.io.parse_tensor``, Tensor::FromProto) is the judge of
every TensorProto written here.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from serveprof.errors import ServeprofError
from serveprof.server.batching import BatchingOptions, batching_options, batching_parameters_text
from serveprof.server.config_protos import message_class
from serveprof.server.flags import response_serialization
from serveprof.wire import example_json
from serveprof.wire.status import ServingError
from serveprof.wire.tensor_codec import tensor_bytes, to_ndarray, varints

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.linspace(-1, 1, 5),
    np.array([-1, 0, 1, 2**31 - 1, -(2**31)], np.int32),
    np.array([2**63 - 1, -(2**63), 0, 127, 128, 300], np.int64),
    np.array([True, False, True]),
    np.array([0, 255, 7], np.uint8),
    np.array([-128, 5], np.int8),
    np.array([1.5, -2.25], np.float16),
    np.array([1.5, 3], ml_dtypes.bfloat16),
    np.array([1 + 2j], np.complex64),
    np.array([2**32 - 1], np.uint32),
    np.array([2**64 - 1, 2**53 + 1], np.uint64),
    np.array([[b"ab", b""], [b"xyz", b"\x00\xff"]], object),
    np.zeros((0, 3), np.float32),
    np.float32(3.5),
]


@pytest.mark.parametrize("tensor_content", [False, True], ids=["typed fields", "tensor_content"])
@pytest.mark.parametrize("array", ARRAYS, ids=lambda array: f"{np.asarray(array).dtype}{list(np.shape(array))}")
def test_tensor_bytes_are_what_tensorflow_reads(array, tensor_content):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    array = np.asarray(array)
    raw = tensor_bytes(array, tensor_content)
    proto = tensor_pb2.TensorProto.FromString(raw)
    assert bool(proto.tensor_content) == (tensor_content and array.size > 0)
    parsed = tf.io.parse_tensor(raw, tf.as_dtype(proto.dtype)).numpy()
    assert parsed.shape == array.shape and np.array_equal(parsed, array)
    ours = to_ndarray(proto)  # and the server reads it back, strings in tensor_content included
    assert ours.dtype == array.dtype and np.array_equal(ours, array)


def test_varints_match_protobufs_encoding():
    from google.protobuf.internal import encoder

    values = np.array([0, 1, 127, 128, 300, 2**31 - 1, -1, -(2**63), 2**62], np.int64)
    expected = b"".join(encoder._VarintBytes(int(value) & (2**64 - 1)) for value in values)
    assert varints(values) == expected


def test_a_string_list_shorter_than_announced_is_a_parsing_error():
    from tensorflow.core.framework import tensor_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"\x05ab")
    proto.tensor_shape.dim.add().size = 1
    with pytest.raises(ServingError, match="tensor parsing error: tensor_content of a string tensor"):
        to_ndarray(proto)


# ------------------------------------------------------------------ classify / regress JSON


def classification_request(body: bytes):
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    example_json.fill_request(body, request)
    return request


def test_examples_are_typed_as_json_tensor_cc_types_them():
    request = classification_request(
        b'{"signature_name": "s", "context": {"c": [1, 2]}, "examples": '
        b'[{"f": 2.0, "i": 3, "b": true, "s": "txt", "raw": {"b64": "AAE="}, "l": [1.5, 2.5]}]}'
    )
    assert request.model_spec.signature_name == "s"
    assert request.input.WhichOneof("kind") == "example_list_with_context"
    assert list(request.input.example_list_with_context.context.features.feature["c"].int64_list.value) == [1, 2]
    feature = request.input.example_list_with_context.examples[0].features.feature
    assert list(feature["f"].float_list.value) == [2.0]
    assert list(feature["i"].int64_list.value) == [3] and list(feature["b"].int64_list.value) == [1]
    assert list(feature["s"].bytes_list.value) == [b"txt"] and list(feature["raw"].bytes_list.value) == [b"\x00\x01"]
    assert list(feature["l"].float_list.value) == [1.5, 2.5]


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"examples": []}', "'examples' value is an empty array"),
        (b'{"signature_name": 1, "examples": [{}]}', "'signature_name' key must be a string value."),
        (b'{"instances": [1]}', "When method is classify, key 'examples' is expected and was not found"),
        (b'{"examples": {"x": 1}}', "Expecting 'examples' value to be an list/array"),
        (b'{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        (b'{"examples": [{"x": [1.0, "a"]}]}', "Unexpected element type in feature: x expecting type: float"),
        (
            b'{"examples": [{"x": [1.5, 2]}]}',
            "Unexpected element type in feature: x expecting type: float",
        ),  # 2 is int64
        (b'{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
        (b'{"examples": [{"x": [[1]]}]}', "Feature: x has element with unexpected JSON type: Array"),
        (b'{"examples": [{"x": 18446744073709551615}]}', "Feature: x has uint64_t element. Only int64_t is supported."),
        (b'{"examples": [{"x": {"b64": "!!"}}]}', "Unable to base64 decode"),
    ],
)
def test_bad_examples_get_json_tensor_cc_messages(body, message):
    with pytest.raises(ServingError) as caught:
        classification_request(body)
    assert message in caught.value.message and caught.value.code.name == "INVALID_ARGUMENT"


def test_classification_and_regression_results_as_json():
    import orjson
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    classification = classification_pb2.ClassificationResult()
    klass = classification.classifications.add().classes.add()
    klass.label, klass.score = "cat", 0.3
    assert orjson.loads(example_json.classification_json(classification)) == {"results": [[["cat", 0.3]]]}
    regression = regression_pb2.RegressionResult()
    regression.regressions.add().value = 0.1
    assert example_json.regression_json(regression) == b'{"results":[0.1]}'  # float32 written in its shortest form
    with pytest.raises(ServingError, match="Cannot convert empty RegressionResults to JSON"):
        example_json.regression_json(regression_pb2.RegressionResult())


# ------------------------------------------------------------------------ batching and session


def test_batching_parameters_text_round_trips_and_is_checked():
    from google.protobuf import text_format

    text = batching_parameters_text(
        {
            "max_batch_size": 32,
            "batch_timeout_micros": 5000,
            "num_batch_threads": 2,
            "allowed_batch_sizes": [8, 16, 32],
            "pad_variable_length_inputs": True,
        }
    )
    options = batching_options(text_format.Parse(text, message_class("BatchingParameters")()))
    assert options == BatchingOptions(
        max_batch_size=32,
        batch_timeout_micros=5000,
        num_batch_threads=2,
        allowed_batch_sizes=(8, 16, 32),
        pad_variable_length_inputs=True,
    )
    with pytest.raises(ServeprofError, match="Last entry in allowed_batch_sizes must match max_batch_size"):
        batching_parameters_text({"max_batch_size": 32, "allowed_batch_sizes": [8, 16]})
    with pytest.raises(ServeprofError, match="'max_batchsize' is not a BatchingParameters field"):
        batching_parameters_text({"max_batchsize": 32})


def test_defaults_are_the_schedulers():
    options = batching_options(message_class("BatchingParameters")())
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches) == (1000, 0, 10)
    assert options.thread_pool_name == "batch_threads" and options.num_batch_threads >= 1
    assert batching_options(None).thread_pool_name == "model_server_batch_threads"  # server.cc, no file


def test_session_config_follows_server_cc(tmp_path):
    from serveprof.server.session_bundle import session_config

    config_file = tmp_path / "session.txt"
    config_file.write_text("intra_op_parallelism_threads: 3\nallow_soft_placement: true\n")
    config = session_config(0, 2, 0, str(config_file))
    # The flags win: with only the inter-op flag given, intra-op goes back to 0 (TensorFlow's choice).
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (0, 2)
    assert config.allow_soft_placement
    assert session_config(0, 0, 4).intra_op_parallelism_threads == 4
    with pytest.raises(ServeprofError, match="You cannot configure all"):
        session_config(1, 1, 1)
    config_file.write_text("intra_op_parallelism_threads: many\n")
    with pytest.raises(ServeprofError, match="Invalid protobuf file"):
        session_config(0, 0, 0, str(config_file))


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "typed_fields"),
        (["--enable_serialization_as_tensor_content"], "tensor_content"),
        (["--enable_serialization_as_tensor_content=true"], "tensor_content"),
        (["--enable_serialization_as_tensor_content", "false"], "typed_fields"),
        (["--enable_serialization_as_tensor_content=0", "--port=1"], "typed_fields"),
    ],
)
def test_response_serialization_is_read_from_the_flags(argv, expected):
    assert response_serialization(argv) == expected


# ------------------------------------------------------------ SignatureDef checks, on TF Serving's testdata


@pytest.fixture(scope="module")
def half_plus_two_signatures():
    from tensorflow.core.protobuf import saved_model_pb2

    from serveprof.server.signature_runner import SignatureRunner
    from tests.fixtures.embedded_server import TFSERVING_TESTDATA

    saved_model = saved_model_pb2.SavedModel.FromString(
        (TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu" / "00000123" / "saved_model.pb").read_bytes()
    )
    signature_defs = saved_model.meta_graphs[0].signature_def
    return lambda check: {
        key: SignatureRunner(key, value, runner=None, check_method_name=check) for key, value in signature_defs.items()
    }


def test_method_name_check_refuses_a_regress_signature_for_classify(half_plus_two_signatures):
    from tensorflow_serving.apis import model_pb2

    from serveprof.server.example_inference import CLASSIFY_METHOD, REGRESS_METHOD, lookup

    spec = model_pb2.ModelSpec(name="default", signature_name="regress_x_to_y")
    with pytest.raises(ServingError) as caught:
        lookup(half_plus_two_signatures(True), spec, CLASSIFY_METHOD, check_method_name=True)
    assert caught.value.message == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress"
    )
    # Without the check (TF Serving's default) the signature's tensors decide: its one output is named
    # 'outputs', not 'classes' or 'scores', so it is still refused, with that reason.
    with pytest.raises(ServingError, match='at least one of "classes" or "scores"'):
        lookup(half_plus_two_signatures(False), spec, CLASSIFY_METHOD, check_method_name=False)
    assert lookup(half_plus_two_signatures(True), spec, REGRESS_METHOD, check_method_name=True).key == "regress_x_to_y"


def test_predict_feeds_follow_get_input_values(half_plus_two_signatures):
    runner = half_plus_two_signatures(False)["serving_default"]
    identity = lambda alias, value: value  # noqa: E731
    assert runner.feeds({"x": np.ones((1, 1), np.float32)}, identity)[0][0] == "x:0"
    with pytest.raises(ServingError, match=r"input size does not match signature: 2!=1 len\({x,z}\)"):
        runner.feeds({"x": 1, "z": 2}, identity)
    with pytest.raises(ServingError, match=r"Signature input alias: x\(feed name: x:0\) not found in request"):
        runner.feeds({"z": 1}, identity)
    with pytest.raises(ServingError, match="duplicate output tensor alias: y"):
        runner.output_aliases(["y", "y"])

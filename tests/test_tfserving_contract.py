"""TF Serving's own tests, run against ``serveprof serve``: its testdata SavedModels, its requests, its answers.

The requests and expected answers are those of tensorflow_serving/model_servers/
tensorflow_model_server_test.py (and its test base's VerifyPredictRequest),
http_rest_api_handler_test.cc, the REST API doc (g3doc/api_rest.md) and the example
clients (resnet_client_grpc.py, mnist_client.py). The SavedModels are TF Serving's
testdata (tests/data/tfserving): a TF1 export, its TF2 twin, an older TF1 export that
tf.saved_model.load cannot load, and the stateful counter model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest

from tests.fixtures.embedded_server import REPO, TFSERVING_TESTDATA, running_server, server_env

RPC_TIMEOUT = 20.0
HALF_PLUS_TWO = TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu"
HALF_PLUS_TWO_TF2 = TFSERVING_TESTDATA / "saved_model_half_plus_two_tf2_cpu"
HALF_PLUS_THREE = TFSERVING_TESTDATA / "saved_model_half_plus_three"
COUNTER = TFSERVING_TESTDATA / "saved_model_counter"


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    """half_plus_two (TF1) as 'default', with TF Serving's monitoring config, as RunServer starts it."""
    with running_server(
        HALF_PLUS_TWO,
        f"--monitoring_config_file={TFSERVING_TESTDATA / 'monitoring_config.txt'}",
        model_name="default",
        log_dir=tmp_path_factory.mktemp("tf1"),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def tf2(tmp_path_factory):
    """half_plus_two saved by TF2, answering Predict in tensor_content (the flag's effect is tested on it)."""
    with running_server(
        HALF_PLUS_TWO_TF2,
        "--enable_serialization_as_tensor_content",
        model_name="default",
        log_dir=tmp_path_factory.mktemp("tf2"),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def stubs():
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channels = {}

    def stub(server, model_service=False):
        channel = channels.setdefault(server.grpc_target, grpc.insecure_channel(server.grpc_target))
        return (
            model_service_pb2_grpc.ModelServiceStub
            if model_service
            else prediction_service_pb2_grpc.PredictionServiceStub
        )(channel)

    yield stub
    for channel in channels.values():
        channel.close()


def call_rest(url: str, request=None) -> bytes:
    """CallREST of tensorflow_model_server_test_base.py (urllib, JSON body or GET)."""
    data = json.dumps(request).encode("utf-8") if request is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=RPC_TIMEOUT) as response:
        return response.read()


def sorted_object(obj):
    """SortedObject of the test base: JSON compared without order."""
    if isinstance(obj, dict):
        return sorted((key, sorted_object(value)) for key, value in obj.items())
    if isinstance(obj, list):
        return sorted(sorted_object(item) for item in obj)
    return obj


def verify_model_spec(model_spec, name, signature_name, version):
    assert (model_spec.name, model_spec.signature_name, model_spec.version.value) == (name, signature_name, version)


def verify_predict_request(
    stub,
    expected_output,
    expected_version,
    model_name="default",
    specify_output=True,
    batch_input=False,
    signature_name="serving_default",
):
    """VerifyPredictRequest of the test base, line for line."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = stub.Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


# ---------------------------------------------------------------- tensorflow_model_server_test.py


def test_get_model_status(tf1, stubs):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = stubs(tf1, model_service=True).GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].status.error_code == 0


def test_get_model_metadata(tf1, stubs):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = stubs(tf1).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == 123
    assert list(result.metadata) == ["signature_def"]


@pytest.mark.parametrize("model", ["tf1", "tf2"])
def test_classify(model, stubs, request):
    from tensorflow_serving.apis import classification_pb2

    server = request.getfixturevalue(model)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "default"
    classify.model_spec.signature_name = "classify_x_to_y"
    example = classify.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = stubs(server).Classify(classify, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", 123)


@pytest.mark.parametrize("model", ["tf1", "tf2"])
def test_regress(model, stubs, request):
    from tensorflow_serving.apis import regression_pb2

    server = request.getfixturevalue(model)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "default"
    regress.model_spec.signature_name = "regress_x_to_y"
    example = regress.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = stubs(server).Regress(regress, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", 123)


@pytest.mark.parametrize("model", ["tf1", "tf2"])
def test_multi_inference(model, stubs, request):
    from tensorflow_serving.apis import inference_pb2

    server = request.getfixturevalue(model)
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add().model_spec.name = "default"
    multi.tasks[0].model_spec.signature_name = "regress_x_to_y"
    multi.tasks[0].method_name = "tensorflow/serving/regress"
    multi.tasks.add().model_spec.name = "default"
    multi.tasks[1].model_spec.signature_name = "classify_x_to_y"
    multi.tasks[1].method_name = "tensorflow/serving/classify"
    multi.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    result = stubs(server).MultiInference(multi, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for index in range(2):
        verify_model_spec(
            result.results[index].model_spec, "default", multi.tasks[index].model_spec.signature_name, 123
        )


def test_predict_saved_model(tf1, stubs):
    verify_predict_request(stubs(tf1), expected_output=3.0, expected_version=123)
    verify_predict_request(stubs(tf1), expected_output=3.0, expected_version=123, specify_output=False)
    verify_predict_request(stubs(tf1), expected_output=3.0, expected_version=123, batch_input=True)


def test_predict_older_tf1_export_that_tf_saved_model_load_cannot_load(tmp_path, stubs):
    """half_plus_three: 'Shape must be rank 1 but is rank 0 for ParseExample' in tf.saved_model.load; served here."""
    with running_server(HALF_PLUS_THREE, model_name="default", log_dir=tmp_path) as server:
        verify_predict_request(stubs(server), expected_output=4.0, expected_version=123)
        verify_predict_request(stubs(server), expected_output=4.0, expected_version=123, specify_output=False)
        # The REST doc's calls on this model (g3doc/api_rest.md, "Make REST API calls to ModelServer").
        url = f"{server.rest_url}/v1/models/default"
        assert json.loads(call_rest(f"{url}:predict", {"instances": [1.0, 2.0, 5.0]})) == {
            "predictions": [3.5, 4.0, 5.5]
        }
        regress = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
        assert json.loads(call_rest(f"{url}:regress", regress)) == {"results": [3.5, 4.0]}
        with pytest.raises(urllib.error.HTTPError) as caught:
            call_rest(f"{server.rest_url}/v1/models/half:predict", {"instances": [1.0, 5.0]})
        assert caught.value.code == 404
        assert json.loads(caught.value.read()) == {"error": "Servable not found for request: Latest(half)"}


def test_tensor_content_flag_switches_the_answer_to_tensor_content(tf1, tf2, stubs):
    """--enable_serialization_as_tensor_content (tf2 server): the same request answered in tensor_content."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    content = stubs(tf2).Predict(request, RPC_TIMEOUT).outputs["y"]
    assert not content.float_val and np.frombuffer(content.tensor_content, "<f4").tolist() == [3.0]
    typed = stubs(tf1).Predict(request, RPC_TIMEOUT).outputs["y"]
    assert list(typed.float_val) == [3.0] and not typed.tensor_content
    assert "Predict answers in tensor_content" in tf2.log() and "Predict answers in typed fields" in tf1.log()


def test_predict_rest(tf1):
    url = f"{tf1.rest_url}/v1/models/default:predict"
    assert json.loads(call_rest(url, {"instances": [2.0, 3.0, 4.0]})) == {"predictions": [3.0, 3.5, 4.0]}
    assert json.loads(call_rest(url, {"inputs": [2.0, 3.0, 4.0]})) == {"outputs": [3.0, 3.5, 4.0]}


def test_classify_and_regress_rest(tf1):
    base = f"{tf1.rest_url}/v1/models/default"
    classify = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert json.loads(call_rest(f"{base}:classify", classify)) == {"results": [[["", 3.0]]]}
    regress = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert json.loads(call_rest(f"{base}:regress", regress)) == {"results": [3.0]}


def test_get_status_rest(tf1):
    assert json.loads(call_rest(f"{tf1.rest_url}/v1/models/default")) == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def test_get_model_metadata_rest(tf1):
    expected = json.loads((TFSERVING_TESTDATA / "half_plus_two_model_metadata.json").read_text())
    got = json.loads(call_rest(f"{tf1.rest_url}/v1/models/default/metadata"))
    assert sorted_object(got) == sorted_object(expected)


def test_prometheus_endpoint(tf1):
    page = call_rest(f"{tf1.rest_url}/monitoring/prometheus/metrics").decode("utf-8")
    assert "# TYPE" in page


def test_tf_saved_model_save_multiple_signatures(tmp_path, stubs):
    """test_tf_saved_model_save_multiple_signatures: a tf.train.Checkpoint root, unknown-rank inputs."""
    export = (
        "import sys, tensorflow as tf\n"
        "root = tf.train.Checkpoint()\n"
        "root.f = tf.function(lambda x: {'y': 1.}, input_signature=[tf.TensorSpec(None, tf.float32)])\n"
        "root.g = tf.function(lambda x: {'y': 2.}, input_signature=[tf.TensorSpec(None, tf.float32)])\n"
        "tf.saved_model.save(root, sys.argv[1], signatures={'serving_default': root.f, "
        "'custom_signature_key': root.g})\n"
    )
    subprocess.run(
        [sys.executable, "-c", export, str(tmp_path / "m" / "00000123")],
        check=True,
        cwd=REPO,
        env=server_env(),
        timeout=300,
        capture_output=True,
    )
    with running_server(tmp_path / "m", model_name="default", log_dir=tmp_path) as server:
        verify_predict_request(
            stubs(server), expected_output=2.0, expected_version=123, signature_name="custom_signature_key"
        )
        verify_predict_request(stubs(server), expected_output=1.0, expected_version=123)


# ------------------------------------------------------------ http_rest_api_handler_test.cc


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),  # the graph takes [2,2]
        ({"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
        ({"signature_name": "serving_default", "instances": [3.0, 4.0]}, {"predictions": [3.5, 4.0]}),
        ({"signature_name": "serving_default", "inputs": [3.0, 4.0]}, {"outputs": [3.5, 4.0]}),
    ],
)
def test_rest_handler_predict(tf1, body, expected):
    assert json.loads(call_rest(f"{tf1.rest_url}/v1/models/default/versions/123:predict", body)) == expected


@pytest.mark.parametrize(
    "verb, body, expected",
    [
        ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}, {"results": [42]}),
        ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}, {"results": [[["", 12]]]}),
        ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 10.0}]}, {"results": [[["", 7]]]}),
    ],
)
def test_rest_handler_classify_and_regress(tf1, verb, body, expected):
    assert json.loads(call_rest(f"{tf1.rest_url}/v1/models/default:{verb}", body)) == expected


@pytest.mark.parametrize(
    "method, path, body, status, words",
    [
        ("GET", "/v1/foo", None, 400, "Malformed request"),
        ("POST", "/v1/foo", b"", 400, "Malformed request"),
        ("GET", "/v1/models", None, 400, "Missing model name"),
        ("GET", "/v1/models/debug/model_name", None, 400, "Malformed request"),
        ("POST", "/v1/models", b"", 400, "Malformed request"),
        ("GET", "/v1/models/foo:predict", None, 400, "Malformed request"),
        ("POST", "/v1/models/foo/version/50:regress", b"", 400, "Malformed request"),
        ("POST", "/v1/models/foo/versions/HELLO:regress", b"", 400, "Malformed request"),
        ("POST", f"/v1/models/foo/versions/{(1 << 64) - 1}:regress", b"", 400, "Failed to convert version"),
        ("POST", "/v1/models/foo/metadata", b"", 400, "Malformed request"),
        ("POST", "/v1/models/foo:predict", b'{ "instances": [1] }', 404, "Servable not found"),
        ("POST", "/v1/models/foo/versions/50:predict", b'{ "instances": [1] }', 404, "Servable not found"),
        ("POST", "/v1/models/default:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("POST", "/v1/models/default:predict", b'{ "instances": ["x", "y"] }', 400, "not of expected type: float"),
        (
            "POST",
            "/v1/models/default/labels/nonexistent:predict",
            b'{ "instances": ["x", "y"] }',
            400,
            "Unrecognized servable version label",
        ),
        (
            "POST",
            "/v1/models/default:predict",
            b'{ "signature_name": 100 }',
            400,
            "'signature_name' key must be a string value.",
        ),
    ],
)
def test_rest_handler_errors(tf1, method, path, body, status, words):
    request = urllib.request.Request(f"{tf1.rest_url}{path}", data=body, method=method)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=RPC_TIMEOUT)
    assert caught.value.code == status
    assert words in json.loads(caught.value.read())["error"]


# ------------------------------------------------------------------- the example clients


def test_resnet_client_grpc_and_mnist_client_request_shapes(tf1, stubs):
    """resnet_client_grpc.py reads ``outputs[...].float_val``; mnist_client.py sends ``make_tensor_proto(image,
    shape=[1, image.size])`` and reads ``float_val`` of its result future."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.expand_dims(np.array([6.0], np.float32), 0)))
    result = stubs(tf1).Predict(request, 10.0).outputs["y"].float_val
    assert int(np.argmax(result)) == 0 and list(result) == [5.0]
    image = np.array([4.0], np.float32)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(image, shape=[1, image.size]))
    future = stubs(tf1).Predict.future(request, 5.0)
    assert list(future.result().outputs["y"].float_val) == [4.0]


def test_resnet_client_rest_request_shape(tf1):
    """resnet_client.py posts ``{"instances": <nested list>}`` and reads ``predictions[0]``."""
    answer = json.loads(call_rest(f"{tf1.rest_url}/v1/models/default:predict", {"instances": [[8.0]]}))
    assert answer["predictions"][0] == [6.0]


# ------------------------------------------------------------------------------ counter model


def test_counter_model_stateful_signatures_without_inputs(tmp_path, stubs):
    """export_counter.py's model: signatures with no inputs on a reference-type variable, run as Session runs."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    with running_server(COUNTER, model_name="counter", log_dir=tmp_path) as server:

        def call(signature_name, **inputs):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "counter"
            request.model_spec.signature_name = signature_name
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            return float(tf.make_ndarray(stubs(server).Predict(request, RPC_TIMEOUT).outputs["output"]))

        assert [
            call("get_counter"),
            call("incr_counter"),
            call("incr_counter"),
            call("incr_counter_by", delta=np.float32(3)),
            call("reset_counter"),
            call("get_counter"),
        ] == [0.0, 1.0, 2.0, 5.0, 0.0, 0.0]
        with pytest.raises(grpc.RpcError) as caught:
            call("incr_counter_by")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == (
            "input size does not match signature: 0!=1 len({}) != len({delta}). "
            "Sent extra: {}. Missing but required: {delta}."
        )

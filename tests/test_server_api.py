"""The embedded server's gRPC and REST APIs against real ``serveprof serve`` processes.

Clients are the official tensorflow-serving-api stubs and ``requests``; every answer is
compared with the same SavedModel called in this process. Every bad request must get TF
Serving's error (code and message) and leave the server serving.
"""

from __future__ import annotations

import base64
import json
import socket
import threading

import grpc
import numpy as np
import pytest
import requests

from tests.fixtures.embedded_server import TINY_IMAGE_SIZE, TINY_MODEL_NAME

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def tiny_signature(tf, tiny_classifier_base):
    return tf.saved_model.load(str(tiny_classifier_base / "1")).signatures["serving_default"]


def in_process(signature, **inputs) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {name: value.numpy() for name, value in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def channel(embedded_server):
    with grpc.insecure_channel(embedded_server.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(inputs: dict, name=TINY_MODEL_NAME, version=None, signature=None, output_filter=()):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if signature is not None:
        request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value if not isinstance(value, np.ndarray) else tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def to_array(tensor_proto) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(tensor_proto)


def grpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT_S)
    return caught.value


@pytest.fixture(autouse=True)
def still_serving(request, embedded_server):
    """After every test, the shared server is alive and still answers a valid predict."""
    yield
    assert embedded_server.process.poll() is None, embedded_server.log()[-2000:]
    body = {"instances": images(1).tolist()}
    answer = requests.post(
        f"{embedded_server.rest_url}/v1/models/{TINY_MODEL_NAME}:predict", json=body, timeout=TIMEOUT_S
    )
    assert answer.status_code == 200, answer.text


# ----------------------------------------------------------------------- gRPC: success


def test_grpc_predict_equals_the_signature_in_process(stub, tiny_signature):
    batch = images(4, seed=1)
    response = stub.Predict(predict_request({"images": batch}), timeout=TIMEOUT_S)
    expected = in_process(tiny_signature, images=batch)["probabilities"]
    np.testing.assert_allclose(to_array(response.outputs["probabilities"]), expected, rtol=1e-6, atol=1e-7)
    assert response.model_spec.name == TINY_MODEL_NAME
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_grpc_predict_accepts_typed_float_val(stub, tiny_signature):
    """Clients that fill float_val instead of tensor_content get the same answer."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    batch = images(2, seed=2)
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=batch.ravel().tolist())
    tensor.tensor_shape.dim.extend([tensor.tensor_shape.Dim(size=size) for size in batch.shape])
    response = stub.Predict(predict_request({"images": tensor}), timeout=TIMEOUT_S)
    np.testing.assert_allclose(
        to_array(response.outputs["probabilities"]),
        in_process(tiny_signature, images=batch)["probabilities"],
        rtol=1e-6,
        atol=1e-7,
    )


def test_grpc_float_val_shorter_than_the_shape_repeats_its_last_value(stub, tiny_signature):
    """TensorFlow's rule for typed fields: one value fills the whole tensor."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.25])
    tensor.tensor_shape.dim.extend(
        [tensor.tensor_shape.Dim(size=size) for size in (3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3)]
    )
    response = stub.Predict(predict_request({"images": tensor}), timeout=TIMEOUT_S)
    expected = in_process(tiny_signature, images=np.full((3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), 0.25, np.float32))
    np.testing.assert_allclose(to_array(response.outputs["probabilities"]), expected["probabilities"], rtol=1e-6)


def test_grpc_large_batch_round_trips(stub, tiny_signature):
    """A 3 MB request (4096 images): the zero-copy path for tensor_content at a size that matters."""
    batch = images(4096, seed=3)
    response = stub.Predict(predict_request({"images": batch}), timeout=TIMEOUT_S)
    np.testing.assert_allclose(
        to_array(response.outputs["probabilities"]),
        in_process(tiny_signature, images=batch)["probabilities"],
        rtol=1e-5,
        atol=1e-7,
    )


def test_grpc_metadata_packs_a_signature_def_map(stub):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = TINY_MODEL_NAME
    response = stub.GetModelMetadata(request, timeout=TIMEOUT_S)
    assert response.model_spec.name == TINY_MODEL_NAME and response.model_spec.version.value == 1
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    serving = signature_defs.signature_def["serving_default"]
    images_info = serving.inputs["images"]
    assert images_info.dtype == 1  # DT_FLOAT
    assert [dim.size for dim in images_info.tensor_shape.dim] == [-1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3]
    assert [dim.size for dim in serving.outputs["probabilities"].tensor_shape.dim] == [-1, 3]


def test_grpc_model_status_is_available(model_stub):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TINY_MODEL_NAME
    response = model_stub.GetModelStatus(request, timeout=TIMEOUT_S)
    [status] = response.model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, status.AVAILABLE, 0)


def test_concurrent_grpc_and_rest_requests_all_get_their_own_answers(embedded_server, stub, tiny_signature):
    url = f"{embedded_server.rest_url}/v1/models/{TINY_MODEL_NAME}:predict"
    failures: list[str] = []

    def client(index: int) -> None:
        batch = images(1 + index % 3, seed=100 + index)
        expected = in_process(tiny_signature, images=batch)["probabilities"]
        with requests.Session() as session:
            for _ in range(5):
                try:
                    if index % 2:
                        got = to_array(
                            stub.Predict(predict_request({"images": batch}), timeout=TIMEOUT_S).outputs["probabilities"]
                        )
                    else:
                        got = np.array(
                            session.post(url, json={"instances": batch.tolist()}, timeout=TIMEOUT_S).json()[
                                "predictions"
                            ]
                        )
                    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
                except Exception as error:  # collected, asserted in the main thread
                    failures.append(f"client {index}: {error!r}")

    threads = [threading.Thread(target=client, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures


# ------------------------------------------------------------------------ gRPC: errors

GRPC_ERRORS = {
    "unknown model": (dict(name="nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    "unknown version": (
        dict(version=7),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(tiny, 7)",
    ),
    "unknown signature": (
        dict(signature="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    "wrong dtype": (
        dict(inputs={"images": np.zeros((1, 8, 8, 3), np.int32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "to be float but int32 is provided",
    ),
    # No shape check of the server's own: the graph refuses, in TensorFlow's words, as in TF Serving.
    "wrong shape": (
        dict(inputs={"images": np.zeros((1, 4, 4, 3), np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Matrix size-incompatible: In[0]: [1,48], In[1]: [192,3]",
    ),
    "missing input": (
        dict(inputs={}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1 len({}) != len({images}). Sent extra: {}. "
        "Missing but required: {images}.",
    ),
    "misnamed input": (
        dict(inputs={"pixels": np.zeros((1, 8, 8, 3), np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Signature input alias: images(feed name: serving_default_images:0) not found in request and "
        "no default value provided. Inputs expected to be in the request {pixels}, or default input "
        "alias set: ",
    ),
    "unknown output": (
        dict(output_filter=["logits"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: logits",
    ),
}


@pytest.mark.parametrize("case", GRPC_ERRORS, ids=list(GRPC_ERRORS))
def test_grpc_predict_errors_use_tf_serving_codes(stub, case):
    options, code, message = GRPC_ERRORS[case]
    options = dict(options)
    inputs = options.pop("inputs", {"images": images(1)})
    error = grpc_error(stub.Predict, predict_request(inputs, **options))
    assert error.code() == code, error.details()
    assert message in error.details()


def test_grpc_tensor_content_of_the_wrong_size_is_invalid_argument(stub):
    from tensorflow.core.framework import tensor_pb2, types_pb2

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 100)
    tensor.tensor_shape.dim.extend([tensor.tensor_shape.Dim(size=size) for size in (1, 8, 8, 3)])
    error = grpc_error(stub.Predict, predict_request({"images": tensor}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor_content has 100 bytes but shape [1,8,8,3] of float needs 768" in error.details().replace(", ", ",")


def test_grpc_version_labels_are_refused(stub):
    request = predict_request({"images": images(1)})
    request.model_spec.version_label = "stable"
    error = grpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: stable"


def test_grpc_metadata_and_status_of_unknown_model_are_not_found(stub, model_stub):
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "nope"
    error = grpc_error(stub.GetModelMetadata, metadata)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    error = grpc_error(model_stub.GetModelStatus, status)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
    status.model_spec.name = TINY_MODEL_NAME
    status.model_spec.version.value = 9
    error = grpc_error(model_stub.GetModelStatus, status)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model tiny")


def test_grpc_metadata_without_a_field_is_invalid_argument(stub):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = TINY_MODEL_NAME
    error = grpc_error(stub.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "GetModelMetadataRequest must specify at least one metadata_field"


def test_grpc_a_shape_the_graph_accepts_is_run(stub, tiny_signature):
    """[1,4,16,3] holds the 192 values the model reshapes to; TF Serving runs it, so must this server."""
    odd = np.random.default_rng(5).random((1, 4, 16, 3), dtype=np.float32)
    response = stub.Predict(predict_request({"images": odd}), timeout=TIMEOUT_S)
    expected = in_process(tiny_signature, images=odd.reshape(1, 8, 8, 3))["probabilities"]
    np.testing.assert_allclose(to_array(response.outputs["probabilities"]), expected, rtol=1e-5, atol=1e-7)


def test_grpc_outputs_are_typed_fields_by_default(stub):
    """TF Serving fills float_val unless --enable_serialization_as_tensor_content (resnet_client_grpc reads it)."""
    response = stub.Predict(predict_request({"images": images(2)}), timeout=TIMEOUT_S)
    probabilities = response.outputs["probabilities"]
    assert not probabilities.tensor_content and len(probabilities.float_val) == 6
    np.testing.assert_allclose(np.array(probabilities.float_val).reshape(2, 3).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", ["Classify", "Regress"])
def test_grpc_classify_on_a_predict_signature_is_refused_as_tf_serving_does(stub, method):
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    request = (classification_pb2.ClassificationRequest if method == "Classify" else regression_pb2.RegressionRequest)()
    request.model_spec.name = TINY_MODEL_NAME
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    error = grpc_error(getattr(stub, method), request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    what = "classification" if method == "Classify" else "regression"
    assert error.details().startswith(f"No {what} inputs found in SignatureDef: inputs {{")


def test_grpc_reload_config_is_unimplemented(channel):
    call = channel.unary_unary("/tensorflow.serving.ModelService/HandleReloadConfigRequest")
    assert grpc_error(call, b"").code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_undecodable_predict_bytes_are_invalid_argument(channel):
    call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    error = grpc_error(call, b"\x12\xff\xff\xff\xff\x0f")  # an inputs entry claiming 4 GB
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Could not parse the PredictRequest" in error.details()


# ------------------------------------------------------------------------ REST: success


def rest(embedded_server, path: str) -> str:
    return f"{embedded_server.rest_url}/v1/models/{path}"


def test_rest_row_format_equals_the_signature_in_process(embedded_server, tiny_signature):
    batch = images(3, seed=4)
    answer = requests.post(rest(embedded_server, "tiny:predict"), json={"instances": batch.tolist()}, timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    np.testing.assert_allclose(
        np.array(answer.json()["predictions"]),
        in_process(tiny_signature, images=batch)["probabilities"],
        rtol=1e-6,
        atol=1e-7,
    )


def test_rest_columnar_format_equals_the_signature_in_process(embedded_server, tiny_signature):
    batch = images(2, seed=5)
    body = {"signature_name": "serving_default", "inputs": {"images": batch.tolist()}}
    answer = requests.post(rest(embedded_server, "tiny/versions/1:predict"), json=body, timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(
        np.array(answer.json()["outputs"]),
        in_process(tiny_signature, images=batch)["probabilities"],
        rtol=1e-6,
        atol=1e-7,
    )


def test_rest_accepts_nan_and_infinity_tokens(embedded_server):
    """TF Serving's parser takes NaN/Infinity; a NaN input gives NaN probabilities, written as NaN."""
    row = images(1).tolist()
    row[0][0][0][0] = float("nan")
    answer = requests.post(
        rest(embedded_server, "tiny:predict"), data=json.dumps({"instances": row}), timeout=TIMEOUT_S
    )
    assert answer.status_code == 200, answer.text
    assert "NaN" in answer.text
    assert np.isnan(np.array(json.loads(answer.text)["predictions"])).all()


def test_rest_status_is_shaped_like_tf_serving(embedded_server):
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    for path in ("tiny", "tiny/versions/1"):
        answer = requests.get(rest(embedded_server, path), timeout=TIMEOUT_S)
        assert answer.status_code == 200 and answer.json() == expected, answer.text


def test_rest_metadata_is_shaped_like_tf_serving(embedded_server):
    answer = requests.get(rest(embedded_server, "tiny/metadata"), timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert payload["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    images_info = payload["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["images"]
    assert images_info["dtype"] == "DT_FLOAT"
    assert [dim["size"] for dim in images_info["tensor_shape"]["dim"]] == ["-1", "8", "8", "3"]


# ------------------------------------------------------------------------- REST: errors

REST_ERRORS = {
    "unknown model": (
        "POST",
        "nope:predict",
        {"instances": [[[[0.0] * 3] * 8] * 8]},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        "POST",
        "tiny/versions/2:predict",
        {"instances": [[[[0.0] * 3] * 8] * 8]},
        404,
        "Servable not found for request: Specific(tiny, 2)",
    ),
    "unknown signature": (
        "POST",
        "tiny:predict",
        {"signature_name": "nope", "instances": [[[[0.0] * 3] * 8] * 8]},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    "wrong dtype": (
        "POST",
        "tiny:predict",
        {"instances": [[[["a"] * 3] * 8] * 8]},
        400,
        'JSON Value: "a" Type: String is not of expected type: float',
    ),
    "wrong shape": (
        "POST",
        "tiny:predict",
        {"instances": [[[[0.0] * 3] * 4] * 4]},
        400,
        "Matrix size-incompatible: In[0]: [1,48], In[1]: [192,3]",
    ),
    "ragged list": (
        "POST",
        "tiny:predict",
        {"instances": [[[[0.0] * 3] * 8] * 7 + [[[0.0] * 2] * 8]]},
        400,
        "do not form a dense tensor",
    ),
    "missing input": (
        "POST",
        "tiny:predict",
        {"inputs": {"pixels": [[[[0.0] * 3] * 8] * 8]}},
        400,
        "Missing named input: images in 'inputs' object.",
    ),
    "both formats": ("POST", "tiny:predict", {"inputs": [1], "instances": [1]}, 400, "expecting only one of"),
    "no tensors": (
        "POST",
        "tiny:predict",
        {"signature_name": "serving_default"},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    "empty instances": ("POST", "tiny:predict", {"instances": []}, 400, "No values in 'instances' array"),
    "unknown model status": ("GET", "nope", None, 404, "Could not find any versions of model nope"),
    "unknown version status": ("GET", "tiny/versions/3", None, 404, "Could not find version 3 of model tiny"),
    "unknown model metadata": ("GET", "nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    "classify without examples": ("POST", "tiny:classify", {"examples": []}, 400, "'examples' value is an empty array"),
    "regress on a predict signature": (
        "POST",
        "tiny:regress",
        {"examples": [{"x": 1.0}]},
        400,
        "No regression inputs found in SignatureDef",
    ),
    "verb in capitals": (
        "POST",
        "tiny:PREDICT",
        {"instances": [1]},
        400,
        "Malformed request: POST /v1/models/tiny:PREDICT",
    ),
}


@pytest.mark.parametrize("case", REST_ERRORS, ids=list(REST_ERRORS))
def test_rest_errors_use_tf_serving_http_codes(embedded_server, case):
    method, path, body, status, message = REST_ERRORS[case]
    answer = requests.request(method, rest(embedded_server, path), json=body, timeout=TIMEOUT_S)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"[1, 2]", b'{"instances": [1,]}', b"\xff\xfe"])
def test_rest_malformed_json_is_400(embedded_server, body):
    answer = requests.post(rest(embedded_server, "tiny:predict"), data=body, timeout=TIMEOUT_S)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.startswith("JSON Parse error") or "Is not object" in error, error


@pytest.mark.parametrize("path", ["/v1/models/tiny/versions/1/extra", "/v1/models//metadata", "/v1/nothing"])
def test_rest_malformed_paths_are_400(embedded_server, path):
    answer = requests.get(embedded_server.rest_url + path, timeout=TIMEOUT_S)
    assert answer.status_code == 400 and answer.json()["error"] == f"Malformed request: GET {path}"


def test_rest_paths_outside_the_api_are_404_json(embedded_server):
    answer = requests.get(embedded_server.rest_url + "/etc/passwd", timeout=TIMEOUT_S)
    assert answer.status_code == 404 and "error" in answer.json()


def test_rest_oversized_body_is_refused_from_its_content_length(embedded_server):
    """Declared far beyond --max_request_bytes (default 256 MiB) and never sent: answered at once with 413."""
    declared = 300 << 20
    head = (
        f"POST /v1/models/{TINY_MODEL_NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", embedded_server.rest_port), timeout=TIMEOUT_S) as sock:
        sock.sendall(head + b'{"instances": [')
        reply = sock.makefile("rb").read()
    status_line, _, rest_of_reply = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", reply[:300]
    error = json.loads(rest_of_reply.split(b"\r\n\r\n", 1)[1])["error"]
    assert f"{declared} bytes" in error and "--max_request_bytes=268435456" in error


# ------------------------------------------- strings, b64, several inputs and signatures


def export_echo_model(path) -> None:
    """Two inputs (one DT_STRING, one with a dash in its key) and three outputs, plus a second signature."""
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="text"),
                tf.TensorSpec([None, 2], tf.float32, name="x-values"),
            ]
        )
        def serve(self, text, x_values):
            return {"text_bytes": text, "length": tf.strings.length(text), "doubled": x_values * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def negate(self, x):
            return {"negated": -x}

    module = Echo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "negate": module.negate})


@pytest.fixture(scope="module")
def echo_server(tf, tmp_path_factory):
    from tests.fixtures.embedded_server import running_server

    base = tmp_path_factory.mktemp("echo") / "echo"
    export_echo_model(base / "1")
    with running_server(base, model_name="echo", log_dir=base.parent) as server:
        yield server, tf.saved_model.load(str(base / "1")).signatures


TEXTS = [b"\x00\xffbinary", "h\u00e9llo".encode(), b""]
XS = np.array([[1.5, -2.0], [0.0, 3.25], [7.0, 8.0]], np.float32)


def test_echo_signature_keys_are_the_ones_clients_send(echo_server):
    _, signatures = echo_server
    assert set(signatures["serving_default"].structured_input_signature[1]) == {"text", "x_values"}


def test_grpc_string_input_and_two_inputs(echo_server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    server, signatures = echo_server
    expected = in_process(signatures["serving_default"], text=np.array(TEXTS, object), x_values=XS)
    with grpc.insecure_channel(server.grpc_target) as opened:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(opened)
        request = predict_request({"text": np.array(TEXTS, object), "x-values": XS}, name="echo")
        response = stub.Predict(request, timeout=TIMEOUT_S)
        assert to_array(response.outputs["text_bytes"]).tolist() == TEXTS
        for name in ("length", "doubled"):
            np.testing.assert_array_equal(to_array(response.outputs[name]), expected[name])
        filtered = stub.Predict(
            predict_request({"text": np.array(TEXTS, object), "x-values": XS}, name="echo", output_filter=["length"]),
            timeout=TIMEOUT_S,
        )
        assert list(filtered.outputs) == ["length"]
        negated = stub.Predict(predict_request({"x": XS}, name="echo", signature="negate"), timeout=TIMEOUT_S)
        np.testing.assert_array_equal(to_array(negated.outputs["negated"]), -XS)
        assert negated.model_spec.signature_name == "negate"


def test_rest_b64_row_format_with_two_inputs(echo_server):
    server, signatures = echo_server
    expected = in_process(signatures["serving_default"], text=np.array(TEXTS, object), x_values=XS)
    instances = [
        {"text": {"b64": base64.b64encode(text).decode()}, "x-values": x.tolist()}
        for text, x in zip(TEXTS, XS, strict=True)
    ]
    answer = requests.post(
        f"{server.rest_url}/v1/models/echo:predict", json={"instances": instances}, timeout=TIMEOUT_S
    )
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [
        base64.b64decode(row["text_bytes"]["b64"]) for row in predictions
    ] == TEXTS  # "_bytes" outputs go out as b64
    assert [row["length"] for row in predictions] == expected["length"].tolist()
    np.testing.assert_array_equal(np.array([row["doubled"] for row in predictions]), expected["doubled"])


def test_rest_columnar_plain_strings_and_second_signature(echo_server):
    server, _ = echo_server
    body = {"inputs": {"text": ["abc", "de"], "x-values": XS[:2].tolist()}}
    answer = requests.post(f"{server.rest_url}/v1/models/echo:predict", json=body, timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert outputs["length"] == [3, 2]
    assert [base64.b64decode(item["b64"]) for item in outputs["text_bytes"]] == [b"abc", b"de"]
    negated = requests.post(
        f"{server.rest_url}/v1/models/echo:predict",
        json={"signature_name": "negate", "instances": XS.tolist()},
        timeout=TIMEOUT_S,
    )
    assert negated.status_code == 200, negated.text
    np.testing.assert_array_equal(np.array(negated.json()["predictions"]), -XS)


@pytest.mark.parametrize(
    "instances, message",
    [
        ([{"text": {"b64": "!!!"}, "x-values": [1.0, 2.0]}], "Unable to base64 decode"),
        ([{"text": 5, "x-values": [1.0, 2.0]}], "is not of expected type: string"),
        ([{"text": "a"}], "keys must be equal to: text,x-values"),
        (["a", "b"], "instances is a plain list, but expecting list of objects"),
    ],
)
def test_rest_bad_string_inputs_are_400(echo_server, instances, message):
    server, _ = echo_server
    answer = requests.post(
        f"{server.rest_url}/v1/models/echo:predict", json={"instances": instances}, timeout=TIMEOUT_S
    )
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_grpc_repeated_input_key_takes_the_last_entry_as_protobuf_does(channel, tiny_signature):
    """Two map entries for one key: protobuf keeps the last, so the first (wrong shape) is ignored."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    good, wrong = images(1), np.zeros((2, 3), np.float32)
    first = predict_request({"images": wrong}).SerializeToString()
    second = predict_request({"images": good})
    raw = first + predict_pb2.PredictRequest(inputs=second.inputs).SerializeToString()
    assert predict_pb2.PredictRequest.FromString(raw).inputs["images"].tensor_shape.dim[0].size == 1
    answer = predict_pb2.PredictResponse.FromString(
        channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(raw, timeout=TIMEOUT_S)
    )
    np.testing.assert_allclose(
        tf.make_ndarray(answer.outputs["probabilities"]),
        in_process(tiny_signature, images=good)["probabilities"],
        rtol=1e-5,
    )

"""Random and malformed input against a running embedded server, over REST and gRPC.

One real ``serveprof serve`` process serves a tiny classifier for the whole module.
Hypothesis throws bytes, JSON, near-miss predict bodies, odd URL paths, random
PredictRequests and raw bytes at it. Every answer must be TF Serving's kind of error
(REST: 4xx with ``{"error": "..."}``; gRPC: a code TF Serving itself uses, never
UNKNOWN or INTERNAL from a handler that blew up), nothing may hang (every call has a
timeout), and after each test the same server process is alive and still answers a
valid predict with the reference probabilities.

The number of cases run per surface is printed at the end of the module (run with
``-s`` to see it); docs/reliability.md reports those counts.
"""

from __future__ import annotations

import base64
import collections
import http.client
import ipaddress
import json
import math
import socket
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.embedded_server import TINY_IMAGE_SIZE, TINY_MODEL_NAME, running_server

MODEL = TINY_MODEL_NAME
IMAGE = TINY_IMAGE_SIZE  # the tiny classifier's input is images: float32 [None, 8, 8, 3]
INPUT = "images"
OUTPUT = "probabilities"
TIMEOUT_S = 10.0  # a call that takes longer than this counts as a hang
CAP_BYTES = 1 << 20

# Codes TF Serving answers with for a bad request. UNKNOWN is what grpcio sends when a
# handler raises; INTERNAL is allowed only for a payload gRPC itself cannot parse.
TF_SERVING_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}

CASES: collections.Counter[str] = collections.Counter()

FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def decoy(tiny_classifier_base) -> Path:
    """The same SavedModel beside the served one under another name: if a URL's model name
    ever became a path, /v1/models/../decoy would answer instead of failing."""
    link = tiny_classifier_base.parent / "decoy"
    if not link.exists():
        link.symlink_to(tiny_classifier_base, target_is_directory=True)
    return link


class Served:
    """A running server plus what a healthy one answers for a fixed input."""

    def __init__(self, running, reference_input: np.ndarray, reference_output: np.ndarray):
        self.pid = running.pid
        self.created = psutil.Process(running.pid).create_time()
        self.rest_port = running.rest_port
        self.channel = grpc.insecure_channel(running.grpc_target)
        self.reference_input = reference_input
        self.reference_output = reference_output

    def assert_healthy(self) -> None:
        process = psutil.Process(self.pid)
        assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE, "the server process died"
        assert process.create_time() == self.created, "the server pid belongs to another process now"
        body = json.dumps({"instances": self.reference_input.tolist()}).encode()
        status, answer = http_call(self.rest_port, "POST", f"/v1/models/{MODEL}:predict".encode(), body)
        assert status == 200, answer[:500]
        np.testing.assert_allclose(
            np.array(json.loads(answer)["predictions"]), self.reference_output, rtol=1e-5, atol=1e-6
        )
        response = predict_stub(self.channel).Predict(predict_request(self.reference_input), timeout=TIMEOUT_S)
        np.testing.assert_allclose(
            tensor_to_array(response.outputs[OUTPUT]), self.reference_output, rtol=1e-5, atol=1e-6
        )


def reference_answer(base: Path) -> tuple[np.ndarray, np.ndarray]:
    """The model's output computed in this process by TensorFlow itself, not by the server."""
    import tensorflow as tf

    images = np.random.default_rng(7).random((2, IMAGE, IMAGE, 3), dtype=np.float32)
    signature = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    return images, signature(images=tf.constant(images))[OUTPUT].numpy()


@pytest.fixture(scope="module")
def reference(tiny_classifier_base):
    return reference_answer(tiny_classifier_base)


@pytest.fixture(scope="module")
def server(embedded_server, reference, decoy):
    served = Served(embedded_server, *reference)
    served.assert_healthy()
    yield served
    served.channel.close()
    print("\nfuzz cases run per surface:", json.dumps(dict(sorted(CASES.items()))), f"total={sum(CASES.values())}")


@pytest.fixture(autouse=True)
def still_serving_after_each_test(request):
    yield
    for name in ("server", "capped"):
        if name in request.fixturenames:
            request.getfixturevalue(name).assert_healthy()


# ----------------------------------------------------------------------- transports


def http_call(
    port: int,
    method: str,
    target: bytes,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a raw socket, so the path goes out byte for byte (no client-side
    normalisation of ``..`` or percent-escapes)."""
    lines = [
        method.encode() + b" " + target + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
    ]
    lines += [f"{key}: {value}".encode() for key, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server may answer and close before taking the whole body; read its answer
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def assert_rest_error(status: int, body: bytes, what: object) -> str:
    assert 400 <= status < 500, f"HTTP {status} for {what!r}: {body[:300]!r}"
    payload = json.loads(body)
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"], body[:300]
    return payload["error"]


def predict_stub(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def tensor_proto(dtype: int, dims, content: bytes = b"", unknown_rank: bool = False, **values):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims], unknown_rank=unknown_rank
    )
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=content, **values)


def build_request(
    inputs: dict,
    name: str = MODEL,
    version: int | None = None,
    label: str | None = None,
    signature: str = "serving_default",
    output_filter=(),
):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    elif label is not None:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    for key, tensor in inputs.items():
        request.inputs[key].CopyFrom(tensor)
    request.output_filter.extend(output_filter)
    return request


def predict_request(images: np.ndarray):
    from tensorflow.core.framework import types_pb2

    return build_request({INPUT: tensor_proto(types_pb2.DT_FLOAT, images.shape, images.astype("<f4").tobytes())})


def tensor_to_array(tensor) -> np.ndarray:
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    values = (
        np.frombuffer(tensor.tensor_content, "<f4") if tensor.tensor_content else np.array(tensor.float_val, np.float32)
    )
    return values.reshape(shape)


def grpc_outcome(call, request) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {TIMEOUT_S} s"
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


# ------------------------------------------------------------------------ REST bodies

PREDICT = f"/v1/models/{MODEL}:predict".encode()
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1500, **FUZZ)
@given(body=st.binary(max_size=2048))
def test_rest_arbitrary_bytes_are_refused(server, body):
    CASES["rest_bytes"] += 1
    status, answer = http_call(server.rest_port, "POST", PREDICT, body)
    assert_rest_error(status, answer, body)


@settings(max_examples=700, **FUZZ)
@given(
    body=JSON_VALUES
    | st.fixed_dictionaries(
        {}, optional={"instances": JSON_VALUES, "inputs": JSON_VALUES, "signature_name": JSON_VALUES}
    )
)
def test_rest_random_json_is_refused(server, body):
    CASES["rest_json"] += 1
    # NaN/Infinity go out as the bare tokens TF Serving's parser accepts.
    status, answer = http_call(server.rest_port, "POST", PREDICT, json.dumps(body).encode())
    assert_rest_error(status, answer, body)


def nested(shape: list[int], leaf):
    return [nested(shape[1:], leaf) for _ in range(shape[0])] if shape else leaf


def graph_accepts(dims: list[int]) -> bool:
    """The tiny classifier reshapes to [batch, -1] and multiplies by [IMAGE*IMAGE*3, 3]: as in TF Serving,
    no shape is checked before the graph runs, so every shape with that many values per row is served."""
    return len(dims) >= 2 and math.prod(dims[1:]) == IMAGE * IMAGE * 3


def wrong_shapes():
    shape = st.lists(st.integers(0, 4), min_size=0, max_size=5)
    return shape.filter(lambda dims: not graph_accepts(dims))


def ragged(batch: int, cut: tuple[int, int]):
    instances = nested([batch, IMAGE, IMAGE, 3], 0.5)
    row, depth = cut
    target = instances[row % batch]
    for _ in range(depth):  # shorten one list somewhere below the batch level
        target = target[0]
    target.pop()
    return instances


NAN_ISH = st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "", "0x10", "1,5"])
BAD_B64 = st.text(max_size=16).filter(lambda text: not is_base64(text)) | st.sampled_from(
    ["!!!!", "a", "abc", "====", "YQ=", "\u00e9"]
)


def is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
        return True
    except ValueError:
        return False


def with_leaf(leaf):
    return {"instances": nested([1, IMAGE, IMAGE, 3], leaf)}


NEAR_MISS_BODIES = st.one_of(
    wrong_shapes().map(lambda dims: {"instances": nested(dims, 0.5)}),
    wrong_shapes().map(lambda dims: {"inputs": {INPUT: nested(dims, 0.5)}}),
    st.tuples(st.integers(1, 3), st.tuples(st.integers(0, 2), st.integers(0, 2))).map(
        lambda args: {"instances": ragged(*args)}
    ),
    NAN_ISH.map(with_leaf),
    BAD_B64.map(lambda text: with_leaf({"b64": text})),
    BAD_B64.map(lambda text: {"instances": [{INPUT: {"b64": text}}]}),
    BAD_B64.map(lambda text: {"inputs": {"b64": text}}),
    st.text(max_size=30)
    .filter(lambda name: name not in ("", "serving_default"))
    .map(lambda name: {"signature_name": name, "instances": nested([1, IMAGE, IMAGE, 3], 0.5)}),
    st.text(min_size=1, max_size=20)
    .filter(lambda name: name != INPUT)
    .map(lambda name: {"inputs": {name: nested([1, IMAGE, IMAGE, 3], 0.5)}}),
    st.just({"inputs": {INPUT: nested([1, IMAGE, IMAGE, 3], 0.5)}, "instances": nested([1, IMAGE, IMAGE, 3], 0.5)}),
    st.just({"instances": [{INPUT: nested([IMAGE, IMAGE, 3], 0.5), "extra": 1}]}),
    st.just({"instances": []}),
)


@settings(max_examples=1500, **FUZZ)
@given(body=NEAR_MISS_BODIES)
def test_rest_near_miss_predict_bodies_are_refused(server, body):
    CASES["rest_near_miss"] += 1
    status, answer = http_call(server.rest_port, "POST", PREDICT, json.dumps(body).encode())
    assert_rest_error(status, answer, body)


HUGE_NUMBERS = st.sampled_from(
    ["1e308", "-1e308", "1e39", "-3.5e38", "1e400", "-1e400", str(2**64), str(-(2**70)), "1e-400", "NaN", "Infinity"]
)


@settings(max_examples=300, **FUZZ)
@given(number=HUGE_NUMBERS, at=st.integers(0, IMAGE * IMAGE * 3 - 1))
def test_rest_huge_numbers_never_crash(server, number, at):
    """A well-shaped instance with one extreme number: TF Serving either computes or refuses it (never 5xx)."""
    CASES["rest_huge_numbers"] += 1
    leaves = ["0.5"] * (IMAGE * IMAGE * 3)
    leaves[at] = number
    rows = [",".join(leaves[pixel * 3 : pixel * 3 + 3]) for pixel in range(IMAGE * IMAGE)]
    image = ",".join("[" + ",".join(f"[{rows[y * IMAGE + x]}]" for x in range(IMAGE)) + "]" for y in range(IMAGE))
    status, answer = http_call(server.rest_port, "POST", PREDICT, f'{{"instances": [[{image}]]}}'.encode())
    if status == 200:
        predictions = json.loads(answer)["predictions"]
        assert len(predictions) == 1 and len(predictions[0]) == 3
    else:
        assert_rest_error(status, answer, number)


# ------------------------------------------------------------------------- URL paths

ODD_NAMES = st.one_of(
    st.sampled_from(
        [
            "..",
            "%2e%2e",
            "%2E%2E",
            ".",
            "%2f",
            "..%2f..%2fetc%2fpasswd",
            "..%2fdecoy",
            "decoy",
            "%00",
            "~",
            "*",
            "tiny%00",
            "TINY",
            "%20tiny",
            "tiny%20",
            "tiny%2F1",
        ]
    ),
    st.text(min_size=1, max_size=40).filter(lambda text: text != MODEL).map(lambda text: _quote(text)),
    st.integers(200, 5000).map(lambda n: "a" * n),
)
ODD_VERSIONS = st.one_of(
    st.sampled_from(
        ["..", "%2e%2e", "-1", "0", "2", "1.0", "1e0", "+1", "0x1", "01x", "", "99999999999999999999999", "-0", "１"]
    ),
    # "1", "01", "0001" name the served version (TF Serving reads leading zeros), so
    # they are valid requests, not odd ones.
    st.text(min_size=1, max_size=20)
    .filter(lambda text: not _names_served_version(text))
    .map(lambda text: _quote(text)),
)


def _names_served_version(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) == 1


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


URL_PATHS = st.one_of(
    st.tuples(ODD_NAMES, st.sampled_from(["", ":predict", "/metadata", ":classify", ":nope"])).map(
        lambda p: f"/v1/models/{p[0]}{p[1]}"
    ),
    st.tuples(ODD_VERSIONS, st.sampled_from(["", ":predict", "/metadata"])).map(
        lambda p: f"/v1/models/{MODEL}/versions/{p[0]}{p[1]}"
    ),
    st.tuples(ODD_NAMES, st.sampled_from(["", ":predict"])).map(lambda p: f"/v1/models/{MODEL}/labels/{p[0]}{p[1]}"),
    st.sampled_from(
        [
            "/v1/models/../../etc/passwd",
            "/v1/models/%2e%2e/%2e%2e/etc/passwd",
            "/v1/models/..%2F..%2Fetc%2Fpasswd",
            "/v1/models/../decoy",
            "/v1/models/../decoy/metadata",
            "/v1/models/../decoy:predict",
            "/v1/models/tiny/../../decoy:predict",
            "/v1/models/tiny/versions/../../../etc/passwd",
            "/v1/models/",
            "/v1/models",
            "/v1/",
            "/",
            "/v2/models/tiny",
            "/v1/models//metadata",
            "/v1/models/tiny/versions/1/../../../decoy/metadata",
            "/etc/passwd",
            "/v1/models/tiny:predict/../../x",
        ]
    ),
)


@settings(max_examples=1000, **FUZZ)
@given(path=URL_PATHS, method=st.sampled_from(["GET", "POST"]), raw_unicode=st.booleans())
def test_rest_odd_url_paths_never_reach_the_filesystem(server, path, method, raw_unicode):
    CASES["rest_url_paths"] += 1
    target = path.encode()
    if raw_unicode:  # the same path with its escapes undone, sent as raw UTF-8 bytes
        from urllib.parse import unquote_to_bytes

        # Control bytes stay escaped: they would break the request line itself, which is
        # the HTTP layer's business, not the API's.
        target = b"".join(
            b"%%%02X" % byte if byte < 0x21 or byte == 0x7F else bytes([byte]) for byte in unquote_to_bytes(path)
        )
    body = json.dumps({"instances": nested([1, IMAGE, IMAGE, 3], 0.5)}).encode() if method == "POST" else b""
    try:
        status, answer = http_call(server.rest_port, method, target, body)
    except http.client.BadStatusLine:
        pytest.fail(f"no HTTP answer for {target!r}")
    error = assert_rest_error(status, answer, target)
    assert "root:" not in error, "the error quotes /etc/passwd"
    if b"passwd" in target or b"decoy" in target or b".." in target or b"%2e%2e" in target.lower():
        assert status in (400, 404), f"HTTP {status} for {target!r}"


# --------------------------------------------------------------------------- gRPC


def tensor_strategy():
    from tensorflow.core.framework import types_pb2

    dims = st.lists(st.integers(-3, 10) | st.sampled_from([-1, 2**31, 2**40, 2**62]), max_size=6)
    return st.builds(
        tensor_proto,
        st.sampled_from(list(types_pb2.DataType.values())) | st.integers(-3, 400),
        dims,
        st.binary(max_size=800),
        st.booleans(),
        float_val=st.lists(st.floats(width=32), max_size=8),
        int_val=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
        string_val=st.lists(st.binary(max_size=8), max_size=4),
    )


def random_predict_requests():
    return st.builds(
        build_request,
        st.dictionaries(st.sampled_from([INPUT]) | st.text(max_size=10), tensor_strategy(), max_size=3),
        name=st.sampled_from([MODEL]) | st.text(max_size=20),
        version=st.none() | st.sampled_from([1]) | st.integers(-(2**63), 2**63 - 1),
        label=st.none() | st.text(max_size=10),
        signature=st.sampled_from(["", "serving_default"]) | st.text(max_size=20),
        output_filter=st.lists(st.sampled_from([OUTPUT]) | st.text(max_size=10), max_size=2),
    )


@settings(max_examples=600, **FUZZ)
@given(data=st.data())
def test_grpc_random_predict_requests_get_tf_serving_codes(server, data):
    request = data.draw(random_predict_requests())
    CASES["grpc_predict_random"] += 1
    code, details = grpc_outcome(predict_stub(server.channel).Predict, request)
    assert code in TF_SERVING_CODES | {grpc.StatusCode.OK}, f"{code}: {details}\n{request}"


def near_miss_predict_requests():
    """Requests one defect away from valid; each must be refused."""
    from tensorflow.core.framework import types_pb2

    def tensor(dtype, shape, content=None):
        """Content that fits the shape and dtype unless ``content`` says otherwise."""
        numpy_type = {
            types_pb2.DT_FLOAT: "<f4",
            types_pb2.DT_DOUBLE: "<f8",
            types_pb2.DT_INT32: "<i4",
            types_pb2.DT_UINT8: "u1",
            types_pb2.DT_INT64: "<i8",
            types_pb2.DT_HALF: "<f2",
        }.get(dtype)
        if content is None:
            count = math.prod(shape) if all(d >= 0 for d in shape) and math.prod(shape) < 10**6 else 1
            content = np.zeros(count, numpy_type).tobytes() if numpy_type else b""
        return tensor_proto(dtype, shape, content)

    good_shape = [1, IMAGE, IMAGE, 3]
    good = tensor(types_pb2.DT_FLOAT, good_shape)

    wrong_dtype = st.sampled_from(
        [
            types_pb2.DT_DOUBLE,
            types_pb2.DT_INT32,
            types_pb2.DT_UINT8,
            types_pb2.DT_INT64,
            types_pb2.DT_HALF,
            types_pb2.DT_STRING,
            types_pb2.DT_INVALID,
        ]
    )
    return st.one_of(
        wrong_dtype.map(lambda dtype: build_request({INPUT: tensor(dtype, good_shape)})),
        wrong_shapes().map(lambda dims: build_request({INPUT: tensor(types_pb2.DT_FLOAT, dims)})),
        # From 1 byte: an empty tensor_content is valid (TensorFlow fills the tensor with zeros).
        st.integers(1, 4000)
        .filter(lambda n: n != 768)
        .map(lambda n: build_request({INPUT: tensor(types_pb2.DT_FLOAT, good_shape, b"\0" * n)})),
        st.sampled_from([-1, -2, -(2**40)]).map(
            lambda d: build_request({INPUT: tensor(types_pb2.DT_FLOAT, [d, IMAGE, IMAGE, 3], b"\0" * 768)})
        ),
        st.sampled_from([2**31, 2**40, 2**62]).map(
            lambda d: build_request({INPUT: tensor(types_pb2.DT_FLOAT, [d, IMAGE, IMAGE, 3], b"\0" * 768)})
        ),
        st.just(build_request({})),
        st.text(min_size=1, max_size=10)
        .filter(lambda k: k != INPUT)
        .map(lambda k: build_request({INPUT: good, k: good})),
        st.text(min_size=1, max_size=10).filter(lambda k: k != INPUT).map(lambda k: build_request({k: good})),
        st.text(min_size=1, max_size=20)
        .filter(lambda s: s not in ("", "serving_default"))
        .map(lambda s: build_request({INPUT: good}, signature=s)),
        st.integers(-(2**63), 2**63 - 1)
        .filter(lambda v: v != 1)
        .map(lambda v: build_request({INPUT: good}, version=v)),
        st.text(min_size=1, max_size=10)
        .filter(lambda name: name != OUTPUT)
        .map(lambda name: build_request({INPUT: good}, output_filter=[name])),
    )


@settings(max_examples=1000, **FUZZ)
@given(data=st.data())
def test_grpc_near_miss_predict_requests_are_refused(server, data):
    request = data.draw(near_miss_predict_requests())
    CASES["grpc_predict_near_miss"] += 1
    code, details = grpc_outcome(predict_stub(server.channel).Predict, request)
    assert code in TF_SERVING_CODES, f"{code}: {details}\n{str(request)[:600]}"
    assert details, f"{code} without a message"


RAW_METHODS = {
    "/tensorflow.serving.PredictionService/Predict": "tensorflow_serving.apis.predict_pb2:PredictRequest",
    "/tensorflow.serving.PredictionService/GetModelMetadata": "tensorflow_serving.apis.get_model_metadata_pb2:GetModelMetadataRequest",
    "/tensorflow.serving.PredictionService/Classify": "tensorflow_serving.apis.classification_pb2:ClassificationRequest",
    "/tensorflow.serving.ModelService/GetModelStatus": "tensorflow_serving.apis.get_model_status_pb2:GetModelStatusRequest",
    "/tensorflow.serving.PredictionService/NoSuchMethod": None,
}


def parses_as(payload: bytes, message: str | None) -> bool:
    import importlib

    from google.protobuf.message import DecodeError

    if message is None:
        return True
    module, name = message.split(":")
    try:
        getattr(importlib.import_module(module), name).FromString(payload)
        return True
    except DecodeError:
        return False


@settings(max_examples=1500, **FUZZ)
@given(method=st.sampled_from(sorted(RAW_METHODS)), payload=st.binary(max_size=1024))
def test_grpc_raw_bytes_get_tf_serving_codes(server, method, payload):
    """Bytes straight onto the wire. Bytes that are not even a protobuf get gRPC's own INTERNAL
    "deserializing" answer (TF Serving's C++ server answers the same); anything that parses must be
    answered by the service with one of TF Serving's codes."""
    CASES["grpc_raw_bytes"] += 1
    call = server.channel.unary_unary(method)  # no (de)serializers: bytes in, bytes out
    code, details = grpc_outcome(call, payload)
    if method.endswith("NoSuchMethod"):
        assert code == grpc.StatusCode.UNIMPLEMENTED, f"{code}: {details}"
    elif parses_as(payload, RAW_METHODS[method]):
        assert code in TF_SERVING_CODES | {grpc.StatusCode.OK}, f"{code}: {details} for {payload!r}"
    else:
        assert code in TF_SERVING_CODES or (code == grpc.StatusCode.INTERNAL and "deserializ" in details.lower()), (
            f"{code}: {details} for {payload!r}"
        )


# --------------------------------------------------------------------- body size cap


@pytest.fixture(scope="module")
def capped(tiny_classifier_base, reference, tmp_path_factory):
    with running_server(
        tiny_classifier_base, f"--max_request_bytes={CAP_BYTES}", log_dir=tmp_path_factory.mktemp("capped")
    ) as running:
        served = Served(running, *reference)
        served.assert_healthy()
        yield served
        served.channel.close()


def test_rest_body_over_the_cap_is_refused_before_it_is_read(capped):
    """Declare 64 MiB and send only the headers: a server that tried to read the body first would
    sit waiting for it until the client timeout; the cap must answer at once from Content-Length."""
    declared = 64 << 20
    head = (
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", capped.rest_port), timeout=TIMEOUT_S) as sock:
        sock.sendall(head + b'{"instances": [')
        response = http.client.HTTPResponse(sock)
        response.begin()
        status, body = response.status, response.read()
    error = assert_rest_error(status, body, "64 MiB declared body")
    assert status == 413, status
    assert str(CAP_BYTES) in error or "max_request_bytes" in error, error


def test_rest_body_over_the_cap_sent_in_full_is_refused(capped):
    body = json.dumps({"instances": nested([500, IMAGE, IMAGE, 3], 0.123456789)}).encode()
    assert len(body) > CAP_BYTES
    try:
        status, answer = http_call(capped.rest_port, "POST", PREDICT, body)
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection without an answer")
    assert status == 413, answer[:300]
    assert_rest_error(status, answer, "oversized body")


def test_body_under_the_cap_is_served(capped):
    images = np.zeros((100, IMAGE, IMAGE, 3), np.float32)
    body = json.dumps({"instances": images.tolist()}).encode()
    assert len(body) < CAP_BYTES
    status, answer = http_call(capped.rest_port, "POST", PREDICT, body)
    assert status == 200, answer[:300]
    assert np.array(json.loads(answer)["predictions"]).shape == (100, 3)


def test_grpc_message_over_the_cap_is_resource_exhausted(capped):
    images = np.zeros((2 * CAP_BYTES // (IMAGE * IMAGE * 3 * 4) + 1, IMAGE, IMAGE, 3), np.float32)
    request = predict_request(images)
    assert request.ByteSize() > CAP_BYTES
    code, details = grpc_outcome(predict_stub(capped.channel).Predict, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{code}: {details}"


def test_server_listens_on_loopback_only(server):
    listening = [
        conn.laddr
        for conn in psutil.Process(server.pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert len(listening) >= 2, listening  # gRPC and REST
    assert all(is_loopback(address.ip) for address in listening), listening


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def raw_rest_exchange(port: int, head: bytes, body: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def chunked(*chunks: bytes, sizes: list[bytes] | None = None) -> bytes:
    sizes = sizes or [b"%x" % len(chunk) for chunk in chunks]
    return b"".join(size + b"\r\n" + chunk + b"\r\n" for size, chunk in zip(sizes, chunks, strict=False)) + b"0\r\n\r\n"


CHUNKED_HEAD = (
    f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "Transfer-Encoding: chunked\r\n\r\n"
).encode()


def test_rest_chunked_body_is_served(capped):
    body = json.dumps({"instances": np.zeros((2, IMAGE, IMAGE, 3)).tolist()}).encode()
    status, answer = raw_rest_exchange(capped.rest_port, CHUNKED_HEAD, chunked(body[:100], body[100:]))
    assert status == 200, answer[:300]
    assert np.array(json.loads(answer)["predictions"]).shape == (2, 3)


@pytest.mark.parametrize("size", [b"-1", b"+10", b"1_0", b"0x10", b"\xb9", b"f" * 20])
def test_rest_chunk_sizes_that_are_not_hex_are_refused(capped, size):
    # int(size, 16) alone takes -1, and a read of -1 bytes would read the connection to its end.
    status, answer = raw_rest_exchange(capped.rest_port, CHUNKED_HEAD, size + b"\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n")
    error = assert_rest_error(status, answer, size)
    assert status == 400 and "chunk" in error


def test_rest_chunked_body_over_the_cap_is_refused(capped):
    chunk = b" " * (CAP_BYTES // 2 + 1)
    status, answer = raw_rest_exchange(capped.rest_port, CHUNKED_HEAD, chunked(chunk, chunk, chunk))
    assert status == 413, answer[:300]


@pytest.mark.parametrize("length", ["\u00b9", "\u0663", "1" * 5000, "12abc", "-5"])
def test_rest_content_length_that_is_not_a_plain_number(capped, length):
    head = (
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    status, answer = raw_rest_exchange(capped.rest_port, head, b"{}")
    assert_rest_error(status, answer, length)
    assert status == (413 if length.isascii() and length.isdigit() else 400), answer[:300]


def test_rest_chunk_framing_counts_against_the_cap(capped):
    # 2-byte chunks: 7 bytes on the wire per 2 of data. 400 kB of data is under the cap, its 1.4 MB of chunks
    # are not; counting only the data let 134 MiB of such chunks take 976 MiB of memory.
    body = b"2\r\n  \r\n" * 200_000
    status, answer = raw_rest_exchange(capped.rest_port, CHUNKED_HEAD, body + b"0\r\n\r\n")
    assert status == 413, answer[:300]

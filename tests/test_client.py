"""The gRPC and REST clients against a real ``serveprof serve`` (the session's ``embedded_server``).

Reference outputs come from the SavedModel loaded in-process by TensorFlow in a
subprocess, which first uses the client and checks that doing so never imported
TensorFlow (and that TensorFlow still imports cleanly afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import orjson
import pytest

from serveprof.client import GrpcClient, RestClient, ServingRequestError, SignatureInfo, TensorSpecInfo
from serveprof.client.metadata import signature_from_map
from serveprof.client.protos import get_model_metadata_pb2
from serveprof.errors import ServeprofError
from tests.fixtures.embedded_server import REPO, TINY_IMAGE_SIZE, TINY_MODEL_NAME

TINY_SIGNATURE = SignatureInfo(
    inputs={"images": TensorSpecInfo(np.dtype(np.float32), (None, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3))},
    outputs={"probabilities": TensorSpecInfo(np.dtype(np.float32), (None, 3))},
)


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), dtype=np.float32)


# Every client transport: serveprof's own connections (the defaults) and the libraries'.
TRANSPORTS = [(protocol, transport) for protocol in ("grpc", "rest") for transport in ("builtin", "library")]


def make_client(server, protocol: str, transport: str, model: str = TINY_MODEL_NAME, **options):
    if protocol == "grpc":
        return GrpcClient(server.grpc_target, model, timeout_s=60, transport=transport, **options)
    return RestClient(server.rest_url, model, timeout_s=60, transport=transport, **options)


@pytest.fixture(params=TRANSPORTS, ids="-".join)
def client(request, embedded_server):
    with make_client(embedded_server, *request.param) as made:
        yield made


def test_signature_is_the_exported_one(client):
    assert client.signature() == TINY_SIGNATURE


def test_model_status_is_available(client):
    assert client.model_status() == "AVAILABLE"


def test_prepared_request_is_resent_unchanged(client):
    prepared = client.prepare({"images": images(2)})
    first, second = client.send(prepared), client.send(prepared)
    assert first == second and len(first) > 0


@pytest.mark.parametrize("protocol, transport", TRANSPORTS, ids="-".join)
def test_unknown_model_is_not_found(embedded_server, protocol, transport):
    expected = {"grpc": "NOT_FOUND", "rest": 404}
    with make_client(embedded_server, protocol, transport, "no_such_model") as client:
        with pytest.raises(ServingRequestError) as raised:
            client.send(client.prepare({"images": images(1)}))
        assert raised.value.code == expected[protocol]
        assert "no_such_model" in raised.value.message
        with pytest.raises(ServingRequestError) as raised:
            client.signature()
        assert raised.value.code == expected[protocol]


@pytest.mark.parametrize("protocol, transport", TRANSPORTS, ids="-".join)
def test_wrong_input_shape_is_invalid_argument(embedded_server, protocol, transport):
    wrong = {"images": np.zeros((1, TINY_IMAGE_SIZE + 1, TINY_IMAGE_SIZE, 3), np.float32)}
    with make_client(embedded_server, protocol, transport) as client:
        with pytest.raises(ServingRequestError) as raised:
            client.send(client.prepare(wrong))
        assert raised.value.code == {"grpc": "INVALID_ARGUMENT", "rest": 400}[protocol]
        assert "Matrix size-incompatible" in raised.value.message  # the graph refuses it, as under TF Serving


def test_unknown_signature_name_names_the_known_ones(embedded_server):
    with GrpcClient(embedded_server.grpc_target, TINY_MODEL_NAME, signature_name="nope", timeout_s=60) as client:
        with pytest.raises(ServeprofError, match="no signature 'nope'.*serving_default"):
            client.signature()


@pytest.mark.parametrize("protocol, transport", TRANSPORTS, ids="-".join)
def test_dead_server_is_unavailable(protocol, transport):
    from tests.fixtures.embedded_server import free_port

    port = free_port()  # nothing listens there
    if protocol == "grpc":
        client = GrpcClient(f"127.0.0.1:{port}", TINY_MODEL_NAME, timeout_s=5, transport=transport)
    else:
        client = RestClient(f"http://127.0.0.1:{port}", TINY_MODEL_NAME, timeout_s=5, transport=transport)
    with client:
        with pytest.raises(ServingRequestError) as raised:
            client.connect()
            client.send(b"")
        assert raised.value.code == "UNAVAILABLE"
        with pytest.raises(ServingRequestError) as raised:
            client.model_status()
        assert raised.value.code == "UNAVAILABLE"


def test_rest_row_and_columnar_formats_agree(embedded_server):
    batch = images(3, seed=1)
    with (
        RestClient(embedded_server.rest_url, TINY_MODEL_NAME, timeout_s=60) as rows,
        RestClient(embedded_server.rest_url, TINY_MODEL_NAME, timeout_s=60, columnar=True) as columns,
    ):
        assert "instances" in orjson.loads(rows.prepare({"images": batch}))
        assert "inputs" in orjson.loads(columns.prepare({"images": batch}))
        np.testing.assert_array_equal(
            rows.predict({"images": batch})["probabilities"], columns.predict({"images": batch})["probabilities"]
        )


PREDICT_THEN_REFERENCE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from serveprof.client import GrpcClient, RestClient
    grpc_target, rest_url, model, version_dir, batch_file = sys.argv[1:]
    batch = np.load(batch_file)
    served = {}
    clients = [(f"grpc/{transport}", GrpcClient(grpc_target, model, timeout_s=60, transport=transport)) for transport in ("builtin", "library")]
    clients += [(f"rest/{transport}", RestClient(rest_url, model, timeout_s=60, transport=transport)) for transport in ("builtin", "library")]
    for name, client in clients:
        client.signature(); client.model_status()
        out = client.predict({"images": batch})
        served[name] = {key: [str(value.dtype), value.tolist()] for key, value in out.items()}
        client.close()
    tensorflow_loaded = sorted(name for name in sys.modules if name == "tensorflow" or name.startswith("tensorflow."))
    import tensorflow as tf  # after the clients: the real package must still load
    reference = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(batch))
    proto = tf.make_tensor_proto(batch[:1])
    print(json.dumps({"served": served, "tensorflow_loaded_by_client": tensorflow_loaded,
                      "reference": {key: value.numpy().tolist() for key, value in reference.items()},
                      "make_tensor_proto_ok": tf.make_ndarray(proto).shape == (1,) + batch.shape[1:]}))
""")


def test_predict_equals_the_savedmodel_in_process_and_never_imports_tensorflow(
    embedded_server, tiny_classifier_base, tmp_path
):
    batch_file = tmp_path / "batch.npy"
    np.save(batch_file, images(4, seed=2))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PREDICT_THEN_REFERENCE,
            embedded_server.grpc_target,
            embedded_server.rest_url,
            TINY_MODEL_NAME,
            str(tiny_classifier_base / "1"),
            str(batch_file),
        ],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tensorflow_loaded_by_client"] == []
    assert result["make_tensor_proto_ok"]
    reference = np.asarray(result["reference"]["probabilities"], np.float32)
    assert sorted(result["served"]) == ["grpc/builtin", "grpc/library", "rest/builtin", "rest/library"]
    for protocol in result["served"]:
        dtype, values = result["served"][protocol]["probabilities"]
        assert dtype == "float32"
        np.testing.assert_allclose(np.asarray(values, np.float32), reference, rtol=1e-6, atol=1e-7, err_msg=protocol)


# ------------------------------------------------------------ no server needed


def test_signature_dtypes_and_shapes_from_the_proto():
    enums = {
        "DT_HALF": np.float16,
        "DT_FLOAT": np.float32,
        "DT_DOUBLE": np.float64,
        "DT_INT8": np.int8,
        "DT_INT16": np.int16,
        "DT_INT32": np.int32,
        "DT_INT64": np.int64,
        "DT_UINT8": np.uint8,
        "DT_UINT16": np.uint16,
        "DT_BOOL": np.bool_,
        "DT_STRING": object,
    }
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature = signature_map.signature_def["serving_default"]
    data_type = type(signature_map).DESCRIPTOR.file.pool.FindEnumTypeByName("tensorflow.DataType")
    for enum_name in enums:
        info = signature.inputs[enum_name.lower()]
        info.dtype = data_type.values_by_name[enum_name].number
        info.tensor_shape.dim.add().size = -1
        info.tensor_shape.dim.add().size = 7
    signature.outputs["anything"].dtype = data_type.values_by_name["DT_FLOAT"].number
    signature.outputs["anything"].tensor_shape.unknown_rank = True
    parsed = signature_from_map(signature_map, "serving_default", "m")
    assert {name: spec.dtype for name, spec in parsed.inputs.items()} == {
        name.lower(): np.dtype(dtype) for name, dtype in enums.items()
    }
    assert {spec.shape for spec in parsed.inputs.values()} == {(None, 7)}
    assert parsed.outputs == {"anything": TensorSpecInfo(np.dtype(np.float32), None)}


def test_signature_with_an_uncarriable_dtype_is_refused():
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature_map.signature_def["serving_default"].inputs["handle"].dtype = 20  # DT_RESOURCE
    with pytest.raises(ServeprofError, match="'handle'.*DataType|'handle'.*resource"):
        signature_from_map(signature_map, "serving_default", "m")


def test_rest_row_format_with_several_inputs_and_binary_strings():
    client = RestClient("http://127.0.0.1:1", "m", signature_name="sig")
    body = orjson.loads(
        client.prepare(
            {"ids": np.array([[1, 2], [3, 4]], np.int64), "image_bytes": np.array([b"\x00\xff", b"ab"], dtype=object)}
        )
    )
    assert body == {
        "signature_name": "sig",
        "instances": [{"ids": [1, 2], "image_bytes": {"b64": "AP8="}}, {"ids": [3, 4], "image_bytes": {"b64": "YWI="}}],
    }
    client.close()


def test_grpc_request_carries_tensor_content_not_value_fields():
    from serveprof.client.protos import predict_pb2

    client = GrpcClient("127.0.0.1:1", "m", version=3)
    batch = images(2)
    request = predict_pb2.PredictRequest.FromString(client.prepare({"images": batch}))
    client.close()
    tensor = request.inputs["images"]
    assert (request.model_spec.name, request.model_spec.version.value, request.model_spec.signature_name) == (
        "m",
        3,
        "serving_default",
    )
    assert [dim.size for dim in tensor.tensor_shape.dim] == list(batch.shape)
    assert tensor.tensor_content == batch.tobytes() and len(tensor.float_val) == 0


def test_an_input_of_a_dtype_tensorflow_lacks_is_refused_when_prepared():
    client = GrpcClient("127.0.0.1:1", "m")
    with pytest.raises(ServeprofError, match="'when'"):
        client.prepare({"when": np.array(["2020-01-01"], dtype="datetime64[D]")})
    client.close()


def test_rest_client_reconnects_when_the_server_closed_the_idle_connection(tiny_classifier_base, start_embedded_server):
    server = start_embedded_server(tiny_classifier_base, "--rest_api_timeout_in_ms=300")
    batch = images(1)
    with RestClient(server.rest_url, TINY_MODEL_NAME, timeout_s=60) as client:
        first = client.predict({"images": batch})["probabilities"]
        time.sleep(1.0)  # the server closes the kept-alive connection meanwhile
        np.testing.assert_array_equal(client.predict({"images": batch})["probabilities"], first)

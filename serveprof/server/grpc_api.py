"""TF Serving's gRPC services (PredictionService, ModelService) on serveprof's HTTP/2 server.

Wire-compatible with tensorflow_model_server: same service and method names, the
messages of tensorflow-serving-api, the same status codes. Predict takes the raw
request bytes (see predict_wire) so tensor payloads are never copied by the protobuf
parser. Every other method of the two services answers UNIMPLEMENTED. The transport
is ``grpc_http2.GrpcServer`` (why not grpcio's server: see there).
"""

from __future__ import annotations

import logging
from typing import Callable

from google.protobuf.message import DecodeError

from serveprof.server.core import ServingCore, version_of
from serveprof.server.grpc_http2 import GrpcServer, Method
from serveprof.server.bind_errors import bind_error
from serveprof.server.predict_wire import decode_predict_request
from serveprof.server.responses import model_metadata_response, model_status_response
from serveprof.wire.status import Code, ServingError, invalid_argument
from serveprof.wire.tensor_codec import fill_tensor_proto, to_ndarray

log = logging.getLogger("serveprof.serve")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


class Handlers:
    def __init__(self, core: ServingCore):
        self.core = core

    def predict(self, raw: bytes):
        from tensorflow_serving.apis import predict_pb2

        request, inputs = decode_predict_request(raw)
        spec = request.model_spec
        version, label = version_of(spec)
        served_version, servable = self.core.resolve(spec.name, version, label)
        runner = self.core.signature(servable, spec.signature_name)
        runner.check_input_names(inputs)
        arrays = {name: to_ndarray(tensor, content, self.core.max_request_bytes)
                  for name, (tensor, content) in inputs.items()}
        outputs = self.core.predict(runner, arrays, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = served_version
        response.model_spec.signature_name = runner.key
        for name, array in outputs.items():
            fill_tensor_proto(array, response.outputs[name])
        return response

    def get_model_metadata(self, request):
        return model_metadata_response(self.core, request)

    def get_model_status(self, request):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        return model_status_response(self.core, request.model_spec)


def _parsed(request_type, handler) -> Method:
    """A method taking its request message's bytes, parsed as ``request_type``, answering serialized bytes."""

    def call(raw) -> bytes:
        try:
            request = request_type.FromString(bytes(raw))
        except DecodeError as error:
            raise ServingError(Code.INTERNAL, f"Exception deserializing request! ({error})") from None
        return handler(request).SerializeToString()

    return call


def _unimplemented_message(services: dict[str, set[str]]) -> Callable[[str], str]:
    def message(path: str) -> str:
        service, _, method = path.lstrip("/").partition("/")
        if method in services.get(service, ()):
            return f"{service}.{method} is not supported by the serveprof embedded server; use backend tfserving"
        return f"Method not found: {path}"

    return message


def start_grpc_server(core: ServingCore, host: str, port: int, max_threads: int, max_request_bytes: int,
                      limits=None) -> GrpcServer:
    """Bind and start; raise ServeprofError (see ports.bind_error) if the port cannot be had."""
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2,
        prediction_service_pb2,
    )

    handlers = Handlers(core)
    methods: dict[str, Method] = {
        f"/{PREDICTION_SERVICE}/Predict": lambda raw: handlers.predict(raw).SerializeToString(),
        f"/{PREDICTION_SERVICE}/GetModelMetadata": _parsed(get_model_metadata_pb2.GetModelMetadataRequest,
                                                           handlers.get_model_metadata),
        f"/{MODEL_SERVICE}/GetModelStatus": _parsed(get_model_status_pb2.GetModelStatusRequest,
                                                    handlers.get_model_status),
    }
    # Every method the services' descriptors list, so the unimplemented ones are named as such.
    services = {full_name: {method.name for method in module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]].methods}
                for full_name, module in ((PREDICTION_SERVICE, prediction_service_pb2), (MODEL_SERVICE, model_service_pb2))}
    try:
        server = GrpcServer(methods, host, port, max_threads, max_request_bytes, _unimplemented_message(services),
                            limits=limits)
    except OSError as error:
        raise bind_error(host, port, "--port", error) from None
    server.start()
    return server

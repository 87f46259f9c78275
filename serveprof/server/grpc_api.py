"""TF Serving's gRPC services (PredictionService, ModelService) on grpcio.

Wire-compatible with tensorflow_model_server: same service and method names, the
messages of tensorflow-serving-api, the same status codes. Predict takes the raw
request bytes (see predict_wire) so tensor payloads are never copied by the protobuf
parser. Methods the embedded server does not implement answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import grpc

from serveprof.server.core import ServingCore, version_of
from serveprof.server.ports import bind_error
from serveprof.server.predict_wire import decode_predict_request
from serveprof.server.responses import model_metadata_response, model_status_response
from serveprof.wire.status import Code, ServingError, invalid_argument
from serveprof.wire.tensor_codec import fill_tensor_proto, to_ndarray

log = logging.getLogger("serveprof.serve")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
GRPC_CODES = {code: getattr(grpc.StatusCode, code.name) for code in Code}


def _guarded(method: str, handler: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
    """Turn every failure into a TF Serving status; a bug becomes INTERNAL and is logged, never a dead thread."""

    def call(request, context: grpc.ServicerContext):
        try:
            return handler(request)
        except ServingError as error:
            context.abort(GRPC_CODES[error.code], error.message)
        except Exception as error:  # noqa: BLE001 - the server must outlive any one request
            log.exception("%s failed unexpectedly", method)
            context.abort(grpc.StatusCode.INTERNAL, f"{method} internal error: {type(error).__name__}: {error}")

    return call


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


def _unimplemented(service: str, method: str):
    def answer(_request, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      f"{service}.{method} is not supported by the serveprof embedded server; use backend tfserving")

    return answer


def _service_handler(service_name: str, descriptor_module, implemented: dict) -> grpc.GenericRpcHandler:
    """Handlers for every method the service's descriptor lists; the unimplemented ones refuse."""
    methods = {}
    for method in descriptor_module.DESCRIPTOR.services_by_name[service_name.rsplit(".", 1)[1]].methods:
        if method.name in implemented:
            function, request_type = implemented[method.name]
            methods[method.name] = grpc.unary_unary_rpc_method_handler(
                _guarded(method.name, function),
                request_deserializer=request_type.FromString if request_type else None,
                response_serializer=lambda message: message.SerializeToString())
        else:
            methods[method.name] = grpc.unary_unary_rpc_method_handler(_unimplemented(service_name, method.name))
    return grpc.method_handlers_generic_handler(service_name, methods)


def grpc_server_options(max_request_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", (1 << 31) - 1),  # as tensorflow_model_server
        # Without this a second server could share the port silently (SO_REUSEPORT).
        ("grpc.so_reuseport", 0),
        # A large request then streams in without waiting for window updates, in
        # 16 MB frames: receiving 19 MB took 40 ms with the defaults, 23 ms with these
        # (median, loaded 2-core machine, echo server).
        ("grpc.http2.lookahead_bytes", min(max_request_bytes, 64 << 20)),
        ("grpc.http2.max_frame_size", (1 << 24) - 1),
    ]


def start_grpc_server(core: ServingCore, host: str, port: int, max_threads: int, max_request_bytes: int) -> grpc.Server:
    """Bind and start; raise ServeprofError (see ports.bind_error) if the port cannot be had."""
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2,
        prediction_service_pb2,
    )

    handlers = Handlers(core)
    server = grpc.server(ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
                         options=grpc_server_options(max_request_bytes))
    server.add_generic_rpc_handlers((
        _service_handler("tensorflow.serving.PredictionService", prediction_service_pb2, {
            "Predict": (handlers.predict, None),  # raw bytes: see predict_wire
            "GetModelMetadata": (handlers.get_model_metadata, get_model_metadata_pb2.GetModelMetadataRequest),
        }),
        _service_handler("tensorflow.serving.ModelService", model_service_pb2, {
            "GetModelStatus": (handlers.get_model_status, get_model_status_pb2.GetModelStatusRequest),
        }),
    ))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound != port:
        server.stop(None)
        raise bind_error(host, port, "--port")
    server.start()
    return server

"""TF Serving's gRPC services (PredictionService, ModelService) on serveprof's HTTP/2 server.

Wire-compatible with tensorflow_model_server: same service and method names, the
messages of tensorflow-serving-api, the same status codes and messages. Predict takes
the raw request bytes and writes the raw answer (see predict_wire) so tensor payloads
never go value by value through protobuf. Classify, Regress and MultiInference take
tf.Example inputs (example_inference). Every request is counted and timed in the
metrics as prediction_service_impl.cc counts and times it. Methods of the two services
that TF Serving implements only for its model-config file (HandleReloadConfigRequest)
answer UNIMPLEMENTED. The transport is ``grpc_http2.GrpcServer``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from google.protobuf.message import DecodeError

from serveprof.server.bind_errors import bind_error
from serveprof.server.core import (
    ServingCore,
    run_classify,
    run_multi_inference,
    run_predict,
    run_regress,
    signature,
    tensor_converter,
    version_of,
)
from serveprof.server.grpc_http2 import GrpcServer, Method
from serveprof.server.predict_wire import (
    decode_predict_request,
    encode_predict_response,
    model_spec_bytes,
    payload_offset,
)
from serveprof.server.responses import model_metadata_response, model_status_response
from serveprof.wire.status import Code, ServingError, invalid_argument

log = logging.getLogger("serveprof.serve")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
PREDICT = f"/{PREDICTION_SERVICE}/Predict"


def _missing_model_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")


class Handlers:
    def __init__(self, core: ServingCore, payload_offsets: dict[str, int] | None = None):
        self.core = core
        self.convert = tensor_converter(core.max_request_bytes)
        self.payload_offsets = payload_offsets if payload_offsets is not None else {}  # the transport reads them

    def _timed(self, api: str, model_of: Callable[[], str], call: Callable[[], bytes]) -> bytes:
        started = time.perf_counter()
        error = None
        try:
            return call()
        except BaseException as failure:
            error = failure
            raise
        finally:
            self.core.record(model_of(), api, "GRPC", error, started)

    def predict(self, raw: bytes) -> bytes:
        # Written out rather than through _timed: this is the path every timed request takes.
        started = time.perf_counter()
        model, error = "", None
        try:
            request, inputs = decode_predict_request(raw)
            offset = payload_offset(raw, inputs)
            if offset is not None:
                self.payload_offsets[PREDICT] = offset
            spec = request.model_spec
            model = spec.name
            version, label = version_of(spec)
            served_version, servable = self.core.resolve(model, version, label)
            runner = signature(servable, spec.signature_name)
            outputs = run_predict(
                servable, runner, inputs, self.convert, request.output_filter, metrics=self.core.metrics, model=model
            )
            return encode_predict_response(
                outputs, model_spec_bytes(model, runner.key, served_version), self.core.settings.tensor_content
            )
        except BaseException as failure:
            error = failure
            raise
        finally:
            self.core.record(model, "Predict", "GRPC", error, started)

    def _example_api(self, api: str, request_type, response_type, run) -> Method:
        def method(raw) -> bytes:
            request = _parse(request_type, raw)

            def call() -> bytes:
                _missing_model_spec(request)
                version, label = version_of(request.model_spec)
                served_version, servable = self.core.resolve(request.model_spec.name, version, label)
                response = response_type()
                response.model_spec.name = request.model_spec.name
                response.model_spec.version.value = served_version
                response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
                run(servable, request, response, self.core.settings, metrics=self.core.metrics)
                return response.SerializeToString()

            return self._timed(api, lambda: request.model_spec.name, call)

        return method

    def multi_inference(self, raw) -> bytes:
        from tensorflow_serving.apis import inference_pb2

        request = _parse(inference_pb2.MultiInferenceRequest, raw)
        spec = request.tasks[0].model_spec if request.tasks else None
        version, label = version_of(spec) if spec is not None else (None, None)
        served_version, servable = self.core.resolve(spec.name if spec is not None else "", version, label)
        response = inference_pb2.MultiInferenceResponse()
        run_multi_inference(servable, request, response, self.core.settings, metrics=self.core.metrics)
        for task, result in zip(request.tasks, response.results, strict=True):  # MakeModelSpec, per task
            result.model_spec.name = task.model_spec.name
            result.model_spec.version.value = served_version
            result.model_spec.signature_name = task.model_spec.signature_name or "serving_default"
        return response.SerializeToString()

    def get_model_metadata(self, raw) -> bytes:
        from tensorflow_serving.apis import get_model_metadata_pb2

        return model_metadata_response(
            self.core, _parse(get_model_metadata_pb2.GetModelMetadataRequest, raw)
        ).SerializeToString()

    def get_model_status(self, raw) -> bytes:
        from tensorflow_serving.apis import get_model_status_pb2

        request = _parse(get_model_status_pb2.GetModelStatusRequest, raw)
        _missing_model_spec(request)
        return model_status_response(self.core, request.model_spec).SerializeToString()


def _parse(request_type, raw):
    try:
        return request_type.FromString(bytes(raw))
    except DecodeError as error:
        raise ServingError(Code.INTERNAL, f"Exception deserializing request! ({error})") from None


def _unimplemented_message(services: dict[str, set[str]]) -> Callable[[str], str]:
    def message(path: str) -> str:
        service, _, method = path.lstrip("/").partition("/")
        if method in services.get(service, ()):
            return f"{service}.{method} is not supported by the serveprof embedded server; use backend tfserving"
        return f"Method not found: {path}"

    return message


def start_grpc_server(
    core: ServingCore, host: str, port: int, max_threads: int, max_request_bytes: int, limits=None
) -> GrpcServer:
    """Bind and start; raise ServeprofError (see bind_errors) if the port cannot be had."""
    from tensorflow_serving.apis import classification_pb2, model_service_pb2, prediction_service_pb2, regression_pb2

    payload_offsets: dict[str, int] = {}
    handlers = Handlers(core, payload_offsets)
    methods: dict[str, Method] = {
        PREDICT: handlers.predict,
        f"/{PREDICTION_SERVICE}/Classify": handlers._example_api(
            "Classify",
            classification_pb2.ClassificationRequest,
            classification_pb2.ClassificationResponse,
            run_classify,
        ),
        f"/{PREDICTION_SERVICE}/Regress": handlers._example_api(
            "Regress", regression_pb2.RegressionRequest, regression_pb2.RegressionResponse, run_regress
        ),
        f"/{PREDICTION_SERVICE}/MultiInference": handlers.multi_inference,
        f"/{PREDICTION_SERVICE}/GetModelMetadata": handlers.get_model_metadata,
        f"/{MODEL_SERVICE}/GetModelStatus": handlers.get_model_status,
    }
    # Every method the services' descriptors list, so the unimplemented ones are named as such.
    services = {
        full_name: {method.name for method in module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]].methods}
        for full_name, module in ((PREDICTION_SERVICE, prediction_service_pb2), (MODEL_SERVICE, model_service_pb2))
    }
    try:
        server = GrpcServer(
            methods,
            host,
            port,
            max_threads,
            max_request_bytes,
            _unimplemented_message(services),
            limits=limits,
            payload_offsets=payload_offsets,
        )
    except OSError as error:
        raise bind_error(host, port, "--port", error) from None
    server.start()
    return server

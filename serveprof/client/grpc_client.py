"""TF Serving's gRPC API (PredictionService, ModelService) from tensorflow-serving-api's messages.

The hot path sends bytes: ``prepare`` serializes the PredictRequest once and ``send``
posts those bytes to the Predict method and returns the response unparsed, so a
re-sent request costs neither re-encoding nor parsing. Tensors travel as
``tensor_content`` (one buffer, not one field per value).

``send`` goes through serveprof's own HTTP/2 connection, ``http2_unary.UnaryChannel``
(transport ``"builtin"``, the default): half of grpcio's client CPU per call, which
matters because the client shares the machine with the server it measures.
``transport="library"`` sends it through grpcio instead, for targets that are not plain
``HOST:PORT`` (``dns:///``, ``unix:``) or for comparison. Metadata and status always use grpcio and the official stubs' messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
import numpy as np

from serveprof.client.errors import ServingRequestError
from serveprof.client.http2_unary import GrpcCallError, UnaryChannel
from serveprof.client.metadata import SignatureInfo, signature_from_map
from serveprof.client.protos import (
    GET_MODEL_METADATA,
    GET_MODEL_STATUS,
    PREDICT,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)
from serveprof.errors import ServeprofError
from serveprof.wire.status import ServingError
from serveprof.wire.tensor_codec import fill_tensor_proto, to_ndarray

DEFAULT_TIMEOUT_S = 600.0  # one request of a large model at batch 32 on a CPU takes about a minute
# Requests and responses of large batches run to hundreds of MB; -1 lifts gRPC's 4 MB default.
MESSAGE_LIMITS = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
# How requests travel, in the words of the config's measure.transport: serveprof's own
# connection or the library's (grpcio here).
TRANSPORTS = ("builtin", "library")


def _state_name(state: int) -> str:
    return get_model_status_pb2.ModelVersionStatus.State.Name(state)


class GrpcClient:
    def __init__(
        self,
        target: str,
        model_name: str,
        signature_name: str = "serving_default",
        version: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        options: Sequence[tuple[str, object]] = (),
        transport: str = "builtin",
    ):
        self.target, self.model_name, self.signature_name = target, model_name, signature_name
        self.version, self.timeout_s = version, timeout_s
        if transport not in TRANSPORTS:
            raise ServeprofError(f"unknown gRPC transport {transport!r}", f"use one of {', '.join(TRANSPORTS)}")
        self.transport = transport
        self._unary: UnaryChannel | None = None
        if transport == "builtin":
            try:
                self._unary = UnaryChannel(target, timeout_s=timeout_s)
            except ValueError as error:
                raise ServeprofError(
                    f"gRPC target {error}",
                    "give the server as HOST:PORT, or use transport='library' (grpcio) for other gRPC target forms",
                ) from None
        self._channel = grpc.insecure_channel(target, options=list(MESSAGE_LIMITS) + list(options))
        self._predict = self._channel.unary_unary(PREDICT)  # bytes in, bytes out
        self._metadata = self._channel.unary_unary(
            GET_MODEL_METADATA,
            request_serializer=get_model_metadata_pb2.GetModelMetadataRequest.SerializeToString,
            response_deserializer=get_model_metadata_pb2.GetModelMetadataResponse.FromString,
        )
        self._status = self._channel.unary_unary(
            GET_MODEL_STATUS,
            request_serializer=get_model_status_pb2.GetModelStatusRequest.SerializeToString,
            response_deserializer=get_model_status_pb2.GetModelStatusResponse.FromString,
        )
        self._signature: SignatureInfo | None = None

    def _model_spec(self, spec, with_signature: bool = False) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        if with_signature:
            spec.signature_name = self.signature_name

    def _call(self, method, request, timeout_s: float | None = None):
        try:
            return method(request, timeout=timeout_s if timeout_s is not None else self.timeout_s)
        except grpc.RpcError as error:
            raise ServingRequestError(error.code().name, error.details() or "", self.target) from None

    def signature(self) -> SignatureInfo:
        if self._signature is None:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._model_spec(request.model_spec)
            response = self._call(self._metadata, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signature_map):
                raise ServeprofError(
                    f"the server at {self.target} sent no signature_def metadata for {self.model_name!r}",
                    "use a TF Serving-compatible server (GetModelMetadata must return a SignatureDefMap)",
                )
            self._signature = signature_from_map(signature_map, self.signature_name, self.model_name)
        return self._signature

    def model_status(self, timeout_s: float | None = None) -> str:
        """The model's state: ``AVAILABLE``, ``LOADING``, ``START``, ``UNLOADING`` or ``END``."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec)
        statuses = self._call(self._status, request, timeout_s).model_version_status
        if not statuses:
            return "UNKNOWN"
        if any(status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for status in statuses):
            return "AVAILABLE"
        return _state_name(max(statuses, key=lambda status: status.version).state)

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> bytes:
        """The serialized PredictRequest for ``inputs``, to be sent any number of times."""
        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, with_signature=True)
        for name, array in inputs.items():
            try:
                fill_tensor_proto(np.asarray(array), request.inputs[name])
            except ServingError as error:
                raise ServeprofError(
                    f"input {name!r}: {error.message}",
                    "pass numbers, bools or bytes in a numpy array of a dtype TensorFlow has",
                ) from None
        return request.SerializeToString()

    def connect(self) -> None:
        """Open the connection ``send`` uses, so the first timed request does not pay for it."""
        if self._unary is not None:
            try:
                self._unary.connect()
            except GrpcCallError as error:
                raise ServingRequestError(error.code, error.details, self.target) from None

    def send(self, prepared: bytes) -> bytes:
        """One Predict call; the response is returned unparsed."""
        if self._unary is not None:
            try:
                return self._unary.call(PREDICT, prepared)
            except GrpcCallError as error:
                raise ServingRequestError(error.code, error.details, self.target) from None
        try:
            return self._predict(prepared, timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise ServingRequestError(error.code().name, error.details() or "", self.target) from None

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        response = predict_pb2.PredictResponse.FromString(self.send(self.prepare(inputs)))
        try:
            return {name: to_ndarray(tensor) for name, tensor in response.outputs.items()}
        except ServingError as error:
            raise ServeprofError(
                f"the server at {self.target} sent an output that cannot be read: {error.message}",
                "check that the server speaks TF Serving's PredictionService",
            ) from None

    def close(self) -> None:
        if self._unary is not None:
            self._unary.close()
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

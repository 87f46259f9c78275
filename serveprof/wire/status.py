"""Request errors carrying TF Serving's status codes, and the messages TF Serving uses.

Every failure a request can cause is raised as ``ServingError`` so the gRPC layer can
answer with the same code TF Serving would and the REST layer with the same HTTP status
(the mapping below is TF Serving's ``ToHTTPStatusCode``).
"""

from __future__ import annotations

from enum import Enum


class Code(Enum):
    """``tensorflow.error.Code`` (value = enum number): a TensorFlow error passes through with its own."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode.
HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request failed with TF Serving's ``code`` and a message in TF Serving's words."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def servable_not_found(name: str, version: int | None) -> ServingError:
    # core/basic_manager.cc + ServableRequest::DebugString.
    request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
    return ServingError(Code.NOT_FOUND, f"Servable not found for request: {request}")


def signature_not_found(signature_name: str) -> ServingError:
    # servables/tensorflow/predict_util.cc (the gRPC path).
    return ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')

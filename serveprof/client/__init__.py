"""TF Serving clients: gRPC (tensorflow-serving-api's messages) and REST, never TensorFlow itself.

``client.prepare(inputs)`` builds a request once; ``client.connect()`` opens the
connection the timed requests use; ``client.send(prepared)`` re-sends the request with
nothing else on the hot path; ``client.predict(inputs)`` parses the outputs too.
A server error raises ``ServingRequestError`` with TF Serving's code and message.
"""

from serveprof.client.errors import ServingRequestError
from serveprof.client.grpc_client import GrpcClient
from serveprof.client.metadata import SignatureInfo, TensorSpecInfo
from serveprof.client.rest_client import RestClient

# ARCHITECTURE.md calls the per-tensor description TensorInfo.
TensorInfo = TensorSpecInfo

__all__ = ["GrpcClient", "RestClient", "ServingRequestError", "SignatureInfo", "TensorInfo", "TensorSpecInfo"]

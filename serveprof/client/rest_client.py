"""TF Serving's REST API (/v1/models/<name>...) over one keep-alive HTTP/1.1 connection.

``prepare`` writes the JSON body once with orjson (row format, ``instances``, by
default; columnar ``inputs`` on request) and ``send`` posts those bytes and checks
only the status code, so the timed loop neither re-encodes nor parses.

The connection is serveprof's own ``http1.Http1Connection`` (transport ``"builtin"``, the default),
neither ``requests`` nor ``http.client``: on this machine a ``requests.Session`` post
cost 0.67-0.9 ms of client CPU per request and ``http.client`` 0.17-0.21 ms
(docs/measurement.md), and the client shares the CPU with the server it measures.
``transport="library"`` posts the same body through ``requests`` instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from serveprof.client.errors import ServingRequestError
from serveprof.client.grpc_client import DEFAULT_TIMEOUT_S
from serveprof.client.http1 import Http1Connection
from serveprof.client.metadata import SignatureInfo, TensorSpecInfo, signature_from_map
from serveprof.client.protos import get_model_metadata_pb2
from serveprof.client.requests_connection import RequestsConnection
from serveprof.errors import ServeprofError
from serveprof.wire.json_codec import jsonable
from serveprof.wire.status import ServingError

# As for gRPC (grpc_client.TRANSPORTS): serveprof's own connection or the library's (requests).
TRANSPORTS = ("builtin", "library")


class RestClient:
    def __init__(
        self,
        url: str,
        model_name: str,
        signature_name: str = "serving_default",
        version: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        columnar: bool = False,
        transport: str = "builtin",
    ):
        self.url, self.model_name, self.signature_name = url.rstrip("/"), model_name, signature_name
        self.version, self.timeout_s, self.columnar = version, timeout_s, columnar
        if transport not in TRANSPORTS:
            raise ServeprofError(f"unknown REST transport {transport!r}", f"use one of {', '.join(TRANSPORTS)}")
        self.transport = transport
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServeprofError(f"{url!r} is not an http(s) URL", "give the REST address as http://HOST:PORT")
        self._model_path = f"{parts.path}/v1/models/{model_name}" + (
            f"/versions/{version}" if version is not None else ""
        )
        if transport == "library":
            # The paths below already carry the URL's own path, so the session gets only its origin.
            self._connection = RequestsConnection(
                f"{parts.scheme}://{parts.netloc}", timeout_s=timeout_s, warm_path=self._model_path
            )
        else:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._connection = Http1Connection(parts.hostname, port, tls=parts.scheme == "https", timeout_s=timeout_s)
        self._predict_path = f"{self._model_path}:predict"
        self._signature: SignatureInfo | None = None

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        try:
            status, payload = self._connection.request(method, path, body)
        except TimeoutError as error:
            raise ServingRequestError("DEADLINE_EXCEEDED", str(error) or "timed out", self.url) from None
        except OSError as error:
            raise ServingRequestError("UNAVAILABLE", f"{type(error).__name__}: {error}", self.url) from None
        if status != 200:
            raise ServingRequestError(status, _error_text(payload), self.url)
        return payload

    def _get_json(self, path: str) -> Any:
        payload = self._request("GET", path)
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ServeprofError(
                f"{self.url}{path} did not answer JSON: {payload[:200]!r}",
                "point the client at a TF Serving REST port (--rest_api_port)",
            ) from None

    def signature(self) -> SignatureInfo:
        if self._signature is None:
            from google.protobuf import json_format

            doc = self._get_json(f"{self._model_path}/metadata")
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            try:
                json_format.ParseDict(doc["metadata"]["signature_def"], signature_map, ignore_unknown_fields=True)
            except (KeyError, TypeError, json_format.ParseError) as error:
                raise ServeprofError(
                    f"{self.url}{self._model_path}/metadata has no readable signature_def ({error})",
                    "use a TF Serving-compatible server",
                ) from None
            self._signature = signature_from_map(signature_map, self.signature_name, self.model_name)
        return self._signature

    def model_status(self) -> str:
        statuses = self._get_json(self._model_path).get("model_version_status") or []
        states = [status.get("state", "UNKNOWN") for status in statuses]
        if "AVAILABLE" in states:
            return "AVAILABLE"
        if not statuses:
            return "UNKNOWN"
        return max(statuses, key=lambda status: int(status.get("version", 0))).get("state", "UNKNOWN")

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> bytes:
        """The JSON predict body for ``inputs``, to be posted any number of times."""
        try:
            values = {name: jsonable(name, np.asarray(array)) for name, array in inputs.items()}
        except ServingError as error:
            raise ServeprofError(
                f"cannot write the inputs as JSON: {error.message}",
                "use the gRPC protocol for this model's input types",
            ) from None
        payload: dict[str, Any] = {"signature_name": self.signature_name}
        if self.columnar:
            payload["inputs"] = values
        elif len(values) == 1:
            payload["instances"] = next(iter(values.values()))
        else:
            batch = {len(value) for value in values.values()}
            if len(batch) != 1:
                raise ServeprofError(
                    f"row format needs one batch size for all inputs, got {sorted(batch)}",
                    "give every input the same first dimension, or use the columnar format",
                )
            payload["instances"] = [{name: value[row] for name, value in values.items()} for row in range(batch.pop())]
        if all(array.dtype.kind not in "fc" or np.isfinite(array).all() for array in map(np.asarray, inputs.values())):
            return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        # orjson writes NaN and Infinity as null; TF Serving reads the bare tokens.
        return json.dumps(payload, default=lambda array: array.tolist()).encode()

    def connect(self) -> None:
        """Open the connection ``send`` uses, so the first timed request does not pay for it."""
        try:
            self._connection.connect()
        except OSError as error:
            raise ServingRequestError("UNAVAILABLE", f"{type(error).__name__}: {error}", self.url) from None

    def send(self, prepared: bytes) -> bytes:
        """One predict POST; the response body is returned unparsed."""
        return self._request("POST", self._predict_path, prepared)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        doc = _loads(self.send(self.prepare(inputs)))
        outputs = self.signature().outputs
        if "outputs" in doc:
            columns = doc["outputs"] if isinstance(doc["outputs"], dict) else {_only(outputs): doc["outputs"]}
        else:
            rows = doc["predictions"]
            if rows and isinstance(rows[0], dict) and not _is_b64(rows[0]):
                columns = {name: [row[name] for row in rows] for name in rows[0]}
            else:
                columns = {_only(outputs): rows}
        return {name: _to_array(value, outputs.get(name)) for name, value in columns.items()}

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:  # NaN and Infinity, which TF Serving writes as bare tokens
        return json.loads(payload)


def _error_text(payload: bytes) -> str:
    try:
        return str(orjson.loads(payload)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return payload[:500].decode("utf-8", errors="replace")


def _only(outputs: Mapping[str, TensorSpecInfo]) -> str:
    if len(outputs) != 1:
        raise ServeprofError(
            f"the server sent one unnamed output, but the signature has {len(outputs)} outputs",
            "check that the client and server use the same signature",
        )
    return next(iter(outputs))


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _to_array(value: Any, spec: TensorSpecInfo | None) -> np.ndarray:
    if spec is not None and spec.dtype == object:
        return np.vectorize(_string_value, otypes=[object])(np.asarray(value, dtype=object))
    return np.asarray(value, dtype=spec.dtype if spec is not None else None)


def _string_value(item: Any) -> bytes:
    return base64.b64decode(item["b64"]) if _is_b64(item) else str(item).encode("utf-8")

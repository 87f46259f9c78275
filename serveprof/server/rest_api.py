"""TF Serving's REST API (tensorflow_serving/g3doc/api_rest.md): routes, messages and answers.

Routes, messages and HTTP codes follow http_rest_api_handler.cc and http_server.cc:
``GET /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]`` and
``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:(predict|classify|regress)``;
errors are ``{"error": "..."}``. With ``--monitoring_config_file`` the Prometheus page
is served at its configured path. Every request under /v1/ is counted and timed as
http_server.cc does (entrypoint REST), and ``--rest_api_timeout_in_ms`` is a deadline
on the Session run, as TF Serving's RunOptions make it. The HTTP/1.1 server that
carries it is ``rest_http``; here there is no socket, only method, path and body in
and status and body out.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from urllib.parse import unquote_to_bytes

import numpy as np
import orjson

from serveprof.server.core import ServingCore, run_classify, run_predict, run_regress, tensor_converter
from serveprof.server.responses import (
    metadata_json,
    model_metadata_response,
    model_spec_proto,
    model_status_response,
    status_json,
)
from serveprof.wire import example_json
from serveprof.wire.json_codec import decode_predict_body, encode_predict_response
from serveprof.wire.status import Code, ServingError, invalid_argument

log = logging.getLogger("serveprof.serve")

# http_rest_api_util.cc; re.ASCII because RE2's \d matches ASCII digits only.
_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL
_API = re.compile(r"/v1/.*", _FLAGS)
_PREDICT = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", _FLAGS
)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", _FLAGS)
_INT64_MAX = (1 << 63) - 1


def _shown(path: str) -> str:
    return path if len(path) <= 200 else path[:200] + "..."


class TextBody(bytes):
    """A body that is not JSON: the Prometheus page, which TF Serving sends as text/plain."""

    content_type = "text/plain"


class RestApi:
    """HTTP method + path + body -> (HTTP status, JSON body), with no socket in sight."""

    def __init__(self, core: ServingCore, num_threads: int):
        self.core = core
        self.metrics_path = core.metrics_path  # None: no Prometheus page (no --monitoring_config_file enabling it)
        self._convert = tensor_converter(core.max_request_bytes)
        self._busy = threading.BoundedSemaphore(num_threads)
        self._in_flight = 0
        self._idle = threading.Condition()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is being handled (for a graceful stop); False if ``timeout_s`` ran out."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=max(timeout_s, 0))

    @contextlib.contextmanager
    def request_in_flight(self):
        """Around a whole request, answer written included, so a graceful stop waits for it."""
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.metrics_path is not None and path == self.metrics_path:
            return 200, TextBody(self.core.metrics.prometheus_text().encode())
        started = time.perf_counter()
        request = {"model": "", "method": ""}  # what the path named, for the metrics
        error: BaseException | None = None
        try:
            return 200, self._route(method, path, body, request)
        except ServingError as failure:
            error = failure
            return failure.http_status, orjson.dumps({"error": failure.message})
        except Exception as failure:  # noqa: BLE001 - one bad request must not take the server down
            error = failure
            log.exception("REST %s %s failed unexpectedly", method, _shown(path))
            return 500, orjson.dumps({"error": f"internal error: {type(failure).__name__}: {failure}"})
        finally:
            if _API.fullmatch(path):  # TF Serving's dispatcher sees only these
                self.core.record(request["model"], request["method"], "REST", error, started)

    def _route(self, method: str, path: str, body: bytes, request: dict) -> bytes:
        if not _API.fullmatch(path):
            raise ServingError(Code.NOT_FOUND, f"Not found: {method} {_shown(path)} (the API is under /v1/models/)")
        match = _PREDICT if method == "POST" else _STATUS if method == "GET" else None
        match = match.fullmatch(path) if match else None
        if match is None:
            raise invalid_argument(f"Malformed request: {method} {_shown(path)}")
        name = _unescape(match.group(1) or "", "Failed to decode model name:")
        request["model"] = name
        version = _version(match.group(2))
        label = _unescape(match.group(3), "Failed to decode model version label:") if match.group(3) else None
        if method == "POST":
            verb = request["method"] = match.group(4)
            if verb == "predict":
                return self._predict(name, version, label, body)
            if verb in ("classify", "regress"):
                return self._classify_or_regress(verb, name, version, label, body)
            # The path pattern ignores case, the dispatch in http_rest_api_handler.cc does not.
            raise invalid_argument(f"Malformed request: {method} {_shown(path)}")
        if not name:
            raise invalid_argument("Missing model name in request.")
        spec = model_spec_proto(name, version, label)
        if match.group(4):
            from tensorflow_serving.apis import get_model_metadata_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.CopyFrom(spec)
            return metadata_json(model_metadata_response(self.core, request))
        return status_json(model_status_response(self.core, spec))

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> bytes:
        chosen = []

        def input_specs(signature_name: str) -> dict:
            _, servable = self.core.resolve(name, version, label)
            runner = servable.signatures.get(signature_name)
            if runner is None:
                raise invalid_argument(f'Serving signature name: "{signature_name}" not found in signature def')
            chosen.append(runner)
            return runner.inputs

        with self._busy:
            _, arrays, fmt = decode_predict_body(body, input_specs)
            runner = chosen[0]
            _, servable = self.core.resolve(name, version, label)
            outputs = run_predict(
                servable, runner, arrays, self._input, (), self.core.settings.rest_timeout_ms, self.core.metrics, name
            )
            return encode_predict_response(outputs, fmt)

    def _input(self, alias: str, value) -> np.ndarray:
        """A request array from the JSON as it is; a SignatureDef default (a TensorProto) parsed."""
        return value if isinstance(value, np.ndarray) else self._convert(alias, value)

    def _classify_or_regress(self, verb: str, name: str, version: int | None, label: str | None, body: bytes) -> bytes:
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        classify = verb == "classify"
        request = (classification_pb2.ClassificationRequest if classify else regression_pb2.RegressionRequest)()
        request.model_spec.CopyFrom(model_spec_proto(name, version, label))
        with self._busy:
            example_json.fill_request(body, request)
            _, servable = self.core.resolve(name, version, label)
            response = (classification_pb2.ClassificationResponse if classify else regression_pb2.RegressionResponse)()
            run = run_classify if classify else run_regress
            run(servable, request, response, self.core.settings, self.core.settings.rest_timeout_ms, self.core.metrics)
            if classify:
                return example_json.classification_json(response.result)
            return example_json.regression_json(response.result)


def _unescape(text: str, problem: str) -> str:
    # The request line arrives as latin-1 text; undo that, then the %XX escapes.
    try:
        return unquote_to_bytes(text.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise invalid_argument(f"{problem}{_shown(text)}") from None


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    number = int(text)
    if number > _INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {_shown(text)} to numeric.")
    return number

"""What both APIs and the warm-up share: find the servable a ModelSpec names, run the four inference APIs.

``ServingCore`` is TF Serving's ServerCore for one model: ``resolve`` is
GetServableHandle. The ``run_*`` functions are RunPredict, RunClassify, RunRegress and
RunMultiInference on one loaded servable, with the runtime latency TF Serving records;
warm-up replays its records through the same functions. Model names and versions from
a request are only ever compared with the one served model's name and version; they
never become filesystem paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serveprof.server import example_inference
from serveprof.server.metrics import Metrics
from serveprof.server.servable import ModelHost, Servable, State
from serveprof.server.signature_runner import SignatureRunner
from serveprof.wire.status import Code, ServingError, invalid_argument, servable_not_found, signature_not_found
from serveprof.wire.tensor_codec import to_ndarray

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class RunSettings:
    """How requests run: the flags that change answers or their wire form."""

    tensor_content: bool = False  # --enable_serialization_as_tensor_content
    check_method_name: bool = False  # --enable_signature_method_name_check
    rest_timeout_ms: int = 0  # --rest_api_timeout_in_ms: a Session-run deadline for REST requests


class ServingCore:
    def __init__(
        self,
        host: ModelHost,
        max_request_bytes: int,
        settings: RunSettings = RunSettings(),
        metrics: Metrics | None = None,
        metrics_path: str | None = None,
    ):
        self.host = host
        self.max_request_bytes = max_request_bytes
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.metrics_path = metrics_path  # where REST serves the Prometheus page; None: nowhere

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> tuple[int, Servable]:
        """The servable ``name`` (and ``version`` or ``label``) asks for, as TF Serving's ServerCore finds it."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if label:
            # No version labels are configured (they need --model_config_file), so none can match.
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        state, _, servable = self.host.snapshot()
        if (
            name != self.host.name
            or (version is not None and version != self.host.version)
            or state != State.AVAILABLE
            or servable is None
        ):
            raise servable_not_found(name, version)
        return self.host.version, servable

    def model_status(self, name: str, version: int | None) -> list[tuple[int, State, int, str]]:
        """``[(version, state, error code, error message)]`` as GetModelStatus reports them."""
        if name != self.host.name:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        if version is not None and version != self.host.version:
            raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
        state, error, _ = self.host.snapshot()
        code = Code.UNKNOWN.value if error else Code.OK.value
        return [(self.host.version, state, code, error)]

    def record(self, model: str, api: str, entrypoint: str, error: BaseException | None, started: float) -> None:
        """A finished request in the request count and (if it succeeded) the latency histogram."""
        status = "OK" if error is None else error.code.name if isinstance(error, ServingError) else "UNKNOWN"
        self.metrics.request(model, api, entrypoint, status, time.perf_counter() - started)


def tensor_converter(max_bytes: int) -> Callable:
    """``convert(alias, value)`` for request TensorProtos: Tensor::FromProto's refusal names the input."""

    def convert(alias: str, value):
        tensor, content = value if isinstance(value, tuple) else (value, None)
        try:
            return to_ndarray(tensor, content, max_bytes)
        except ServingError as error:
            detail = error.message.removeprefix("tensor parsing error: ")
            raise invalid_argument(f"tensor parsing error: {alias} ({detail})") from None

    return convert


def signature(servable: Servable, signature_name: str) -> SignatureRunner:
    """Predict's signature lookup (predict_util.cc)."""
    runner = servable.signatures.get(signature_name or DEFAULT_SIGNATURE)
    if runner is None:
        raise signature_not_found(signature_name or DEFAULT_SIGNATURE)
    return runner


def run_predict(
    servable: Servable,
    runner: SignatureRunner,
    request_inputs: Mapping[str, Any],
    convert: Callable[[str, Any], np.ndarray],
    output_filter=(),
    timeout_ms: int = 0,
    metrics: Metrics | None = None,
    model: str = "",
) -> dict[str, np.ndarray]:
    """RunPredict from the signature on: ``{output alias: array}``."""
    runner.verify_for_predict()
    feeds = runner.feeds(request_inputs, convert)
    aliases = runner.output_aliases(output_filter)
    started = time.perf_counter()
    outputs = guarded(
        lambda: servable.session.run(feeds, [runner.output_names[alias] for alias in aliases], timeout_ms)
    )
    if metrics is not None:
        metrics.runtime(model, "Predict", time.perf_counter() - started)
    return dict(zip(aliases, outputs, strict=True))


def run_classify(
    servable: Servable, request, response, settings: RunSettings, timeout_ms: int = 0, metrics: Metrics | None = None
) -> None:
    _run_example_api(
        example_inference.CLASSIFY_METHOD, "Classify", servable, request, response, settings, timeout_ms, metrics
    )


def run_regress(
    servable: Servable, request, response, settings: RunSettings, timeout_ms: int = 0, metrics: Metrics | None = None
) -> None:
    _run_example_api(
        example_inference.REGRESS_METHOD, "Regress", servable, request, response, settings, timeout_ms, metrics
    )


def _run_example_api(
    method: str,
    api: str,
    servable: Servable,
    request,
    response,
    settings: RunSettings,
    timeout_ms: int,
    metrics: Metrics | None,
) -> None:
    seconds = guarded(
        lambda: example_inference.run_example_api(
            method, servable.signatures, request, response, settings.check_method_name, timeout_ms
        )
    )
    if metrics is not None:
        metrics.runtime(request.model_spec.name, api, seconds)


def run_multi_inference(
    servable: Servable, request, response, settings: RunSettings, timeout_ms: int = 0, metrics: Metrics | None = None
) -> None:
    count = guarded(
        lambda: example_inference.multi_inference(
            servable.signatures, request, response, servable.session, settings.check_method_name, timeout_ms
        )
    )
    if metrics is not None:
        metrics.examples(request.tasks[0].model_spec.name if request.tasks else "", count)


def guarded(call: Callable[[], Any]) -> Any:
    """``call()``, with a TensorFlow runtime error turned into the ServingError TF Serving answers with."""
    try:
        return call()
    except ServingError:
        raise
    except Exception as error:
        if getattr(error, "error_code", None) is None:
            raise
        raise from_tensorflow_error(error) from error


def from_tensorflow_error(error: Exception) -> ServingError:
    """A TensorFlow runtime error (e.g. a reshape the input cannot satisfy) as TF Serving reports it."""
    code_number = getattr(error, "error_code", None)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    try:
        code = Code(code_number)
    except ValueError:
        code = Code.INTERNAL
    if code == Code.OK:
        code = Code.INTERNAL
    return ServingError(code, message)


def version_of(model_spec: Any) -> tuple[int | None, str | None]:
    """The version (or label) a ModelSpec proto chooses, None for the latest."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label
    return None, None

"""What both APIs share: find the servable a ModelSpec names, run Predict, report status.

Model names and versions from a request are only ever compared with the one served
model's name and version; they never become filesystem paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serveprof.server.servable import ModelHost, Servable, State
from serveprof.server.signature_runner import SignatureRunner
from serveprof.wire.status import Code, ServingError, invalid_argument, servable_not_found, signature_not_found

DEFAULT_SIGNATURE = "serving_default"


class ServingCore:
    def __init__(self, host: ModelHost, max_request_bytes: int):
        self.host = host
        self.max_request_bytes = max_request_bytes

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> tuple[int, Servable]:
        """The servable ``name`` (and ``version`` or ``label``) asks for, as TF Serving's ServerCore finds it."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if label:
            # No version labels are configured (they need --model_config_file), so none can match.
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        state, _, servable = self.host.snapshot()
        if name != self.host.name or (version is not None and version != self.host.version) \
                or state != State.AVAILABLE or servable is None:
            raise servable_not_found(name, version)
        return self.host.version, servable

    def signature(self, servable: Servable, signature_name: str) -> SignatureRunner:
        runner = servable.signatures.get(signature_name or DEFAULT_SIGNATURE)
        if runner is None:
            raise signature_not_found(signature_name or DEFAULT_SIGNATURE)
        return runner

    def model_status(self, name: str, version: int | None) -> list[tuple[int, State, int, str]]:
        """``[(version, state, error code, error message)]`` as GetModelStatus reports them."""
        if name != self.host.name:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        if version is not None and version != self.host.version:
            raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
        state, error, _ = self.host.snapshot()
        code = Code.UNKNOWN.value if error else Code.OK.value
        return [(self.host.version, state, code, error)]

    def predict(self, runner: SignatureRunner, arrays: dict[str, np.ndarray], output_filter=()) -> dict[str, np.ndarray]:
        try:
            return runner.run(arrays, output_filter)
        except ServingError:
            raise
        except Exception as error:
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

"""One SignatureDef of the loaded Session: Predict's checks and run, as predict_util.cc does them.

The order and wording are TF Serving's (servables/tensorflow/predict_util.cc, and
``GetInputValues`` in tensorflow/cc/saved_model/util.cc): the method name (only with
``--enable_signature_method_name_check``), the number of inputs, each signature input
taken from the request or the SignatureDef's defaults and parsed, then the output
filter. Shapes and dtypes are not checked here: the Session run decides, as in TF
Serving, and its errors come back as TensorFlow words them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serveprof.wire.status import Code, ServingError, invalid_argument
from serveprof.wire.tensor_codec import DTYPES, DType

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class TensorSpec:
    dtype: DType | None  # None: a dtype this server cannot carry
    dtype_enum: int
    shape: tuple[int, ...] | None  # -1 for an unknown dimension; None for an unknown rank

    @classmethod
    def from_tensor_info(cls, info) -> TensorSpec:
        shape = None if info.tensor_shape.unknown_rank else tuple(dim.size for dim in info.tensor_shape.dim)
        return cls(DTYPES.get(info.dtype), info.dtype, shape)


def _joined(names) -> str:
    return ",".join(sorted(names))


class SignatureRunner:
    """Runs one signature on a session runner (``SessionRunner`` or the batching one in front of it)."""

    def __init__(self, key: str, signature_def, runner, check_method_name: bool = False):
        self.key = key
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self.inputs = {alias: TensorSpec.from_tensor_info(info) for alias, info in signature_def.inputs.items()}
        self.outputs = {alias: TensorSpec.from_tensor_info(info) for alias, info in signature_def.outputs.items()}
        self.input_names = {alias: info.name for alias, info in signature_def.inputs.items()}
        self.output_names = {alias: info.name for alias, info in signature_def.outputs.items()}
        self.defaults = dict(signature_def.defaults)
        self._aliases = sorted(self.inputs)
        self.runner = runner
        self.check_method_name = check_method_name

    # ------------------------------------------------------------------ Predict

    def verify_for_predict(self) -> None:
        if self.check_method_name and self.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(
                Code.INTERNAL,
                "Expected prediction signature method_name to be one of "
                f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
                f"Was: {self.method_name}",
            )

    def feeds(self, request_inputs: Mapping[str, Any], convert: Callable[[str, Any], np.ndarray]) -> list:
        """``[(tensor name, array)]`` for every signature input: VerifyRequestInputsSize, then GetInputValues.

        ``convert(alias, value)`` turns a request value (or a default TensorProto) into an
        array, raising INVALID_ARGUMENT ``tensor parsing error: <alias> ...`` if it cannot.
        """
        if len(request_inputs) == len(self._aliases) and all(alias in request_inputs for alias in self._aliases):
            # Every input sent, nothing else: the common case, in the order below.
            return [(self.input_names[alias], convert(alias, request_inputs[alias])) for alias in self._aliases]
        sent, wanted = set(request_inputs), set(self.inputs)
        if len(sent) > len(wanted) or (len(sent) < len(wanted) and not self.defaults):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{_joined(sent)}}}) != "
                f"len({{{_joined(wanted)}}}). Sent extra: {{{_joined(sent - wanted)}}}. "
                f"Missing but required: {{{_joined(wanted - sent)}}}."
            )
        feeds, seen = [], set()
        for alias in self._aliases:
            if alias in request_inputs:
                value = request_inputs[alias]
                seen.add(alias)
            elif alias in self.defaults:
                value = self.defaults[alias]
            else:
                raise invalid_argument(
                    f"Signature input alias: {alias}(feed name: {self.input_names[alias]}) not found in request and no "
                    f"default value provided. Inputs expected to be in the request {{{_joined(request_inputs)}}}, "
                    f"or default input alias set: {_joined(self.defaults)}"
                )
            feeds.append((self.input_names[alias], convert(alias, value)))
        if request_inputs and len(seen) != len(request_inputs):
            raise invalid_argument(
                f"Inputs contains invalid name. Used request inputs: {_joined(seen)}, "
                f"request input: {_joined(request_inputs)}"
            )
        return feeds

    def output_aliases(self, output_filter) -> list[str]:
        """The outputs to fetch: the filter's, checked, or all of the signature's."""
        seen: list[str] = []
        for alias in output_filter:
            if alias not in self.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{_joined(self.outputs)}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen or list(self.outputs)

    def predict(
        self,
        request_inputs: Mapping[str, Any],
        convert: Callable[[str, Any], np.ndarray],
        output_filter=(),
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        """TF Serving's RunPredict from the signature on: checks, one Session run, outputs by alias."""
        self.verify_for_predict()
        feeds = self.feeds(request_inputs, convert)
        aliases = self.output_aliases(output_filter)
        outputs = self.runner.run(feeds, [self.output_names[alias] for alias in aliases], timeout_ms)
        return dict(zip(aliases, outputs, strict=True))

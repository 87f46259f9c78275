"""One SavedModel signature: check a request's tensors against it, then run it.

Checks use the SignatureDef (what clients see in GetModelMetadata) and answer with TF
Serving's messages where TF Serving has one (servables/tensorflow/predict_util.cc).

Running goes straight to the concrete function's flat call: the public keyword call
re-binds and re-validates the structured arguments and converts numpy through a slow
path, which costs about 0.1 ms per request on this machine; converting each array once
with ``tf.convert_to_tensor`` and calling ``_call_flat`` skips that. If a TensorFlow
version changes the private method, the public call is used instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from serveprof.wire.status import invalid_argument
from serveprof.wire.tensor_codec import DTYPES, STRING, DType, dtype_name

log = logging.getLogger("serveprof.serve")


@dataclass(frozen=True)
class TensorSpec:
    dtype: DType | None  # None: a dtype this server cannot carry
    dtype_enum: int
    shape: tuple[int, ...] | None  # -1 for an unknown dimension; None for an unknown rank

    @classmethod
    def from_tensor_info(cls, info) -> TensorSpec:
        shape = None if info.tensor_shape.unknown_rank else tuple(dim.size for dim in info.tensor_shape.dim)
        return cls(DTYPES.get(info.dtype), info.dtype, shape)

    def shape_text(self) -> str:
        return "<unknown rank>" if self.shape is None else "[" + ",".join(str(d) for d in self.shape) + "]"


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class SignatureRunner:
    def __init__(self, key: str, signature_def, function):
        self.key = key
        self.inputs = {name: TensorSpec.from_tensor_info(info) for name, info in signature_def.inputs.items()}
        self.outputs = {name: TensorSpec.from_tensor_info(info) for name, info in signature_def.outputs.items()}
        self._function = function
        self._flat_order = self._find_flat_order(function)
        self._keyword_of = self._find_keywords(function)

    # ------------------------------------------------------------------ checks

    def check_input_names(self, names) -> None:
        sent, wanted = set(names), set(self.inputs)
        if sent == wanted:
            return
        if len(sent) != len(wanted):
            extra, missing = sorted(sent - wanted), sorted(wanted - sent)
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}}) != "
                f"len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(extra)}}}. "
                f"Missing but required: {{{','.join(missing)}}}.")
        alias = sorted(sent - wanted)[0]
        raise invalid_argument(f"input tensor alias not found in signature: {alias}. "
                               f"Inputs expected to be in the set {{{','.join(sorted(wanted))}}}.")

    def check_output_filter(self, output_filter) -> list[str]:
        seen: list[str] = []
        for alias in output_filter:
            if alias not in self.outputs:
                raise invalid_argument(f"output tensor alias not found in signature: {alias} Outputs expected to be "
                                       f"in the set {{{','.join(sorted(self.outputs))}}}.")
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen or list(self.outputs)

    def check_array(self, name: str, array: np.ndarray) -> None:
        spec = self.inputs[name]
        expected = spec.dtype.numpy if spec.dtype else None
        if expected is None or array.dtype != expected:
            got = "string" if array.dtype == object else DTYPES_BY_NUMPY.get(array.dtype, str(array.dtype))
            raise invalid_argument(f"Expects arg[{name}] of signature '{self.key}' to be {dtype_name(spec.dtype_enum)} "
                                   f"but {got} is provided")
        if spec.shape is None:
            return
        if len(spec.shape) != array.ndim or any(want not in (-1, got) for want, got in zip(spec.shape, array.shape)):
            raise invalid_argument(f"input {name} has shape {_shape_text(array.shape)} but signature '{self.key}' "
                                   f"expects {spec.shape_text()} (-1 = any size)")

    # ------------------------------------------------------------------- run

    def run(self, arrays: dict[str, np.ndarray], output_filter=()) -> dict[str, np.ndarray]:
        """Check ``arrays`` and run the signature; return the (filtered) outputs as ndarrays."""
        import tensorflow as tf

        self.check_input_names(arrays)
        wanted = self.check_output_filter(output_filter)
        for name, array in arrays.items():
            self.check_array(name, array)
        if self._flat_order is not None:
            tensors = [tf.convert_to_tensor(arrays[name]) for name in self._flat_order]
            result = self._function._call_flat(tensors, self._function.captured_inputs)
        else:
            result = self._function(**{self._keyword_of[name]: tf.convert_to_tensor(a) for name, a in arrays.items()})
        return {name: result[name].numpy() for name in wanted}

    def _find_flat_order(self, function) -> list[str] | None:
        """Signature input keys in the order ``_call_flat`` takes them, or None to use the public call."""
        try:
            if not callable(getattr(function, "_call_flat", None)):
                return None
            order = []
            for parameter in function.function_type.parameters.values():
                spec_name = getattr(parameter.type_constraint, "name", None)
                order.append(spec_name if spec_name in self.inputs else parameter.name)
            if sorted(order) == sorted(self.inputs) and len(order) == len(self.inputs):
                return order
        except Exception as error:  # any surprise in TF internals: fall back, never fail the load
            log.warning("signature %s: using the public call path (%s)", self.key, error)
        return None

    def _find_keywords(self, function) -> dict[str, str]:
        """Signature input key -> Python keyword of the loaded function (TF sanitizes names like 'in-put')."""
        keywords = {name: name for name in self.inputs}
        try:
            for keyword, spec in function.structured_input_signature[1].items():
                if getattr(spec, "name", None) in self.inputs:
                    keywords[spec.name] = keyword
        except Exception:
            pass
        return keywords


DTYPES_BY_NUMPY = {d.numpy: d.name for d in DTYPES.values() if d.enum != STRING}

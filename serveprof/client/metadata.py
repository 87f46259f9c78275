"""A model's signature as a client sees it: input and output names, numpy dtypes, shapes.

Both clients read it from GetModelMetadata's ``signature_def`` (a SignatureDefMap; REST
returns the same message as JSON), so one function turns it into ``SignatureInfo``.
The DataType -> numpy table is the embedded server's (serveprof.wire.tensor_codec),
which imports neither TensorFlow nor anything else heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serveprof.errors import ServeprofError
from serveprof.wire.tensor_codec import DTYPES, dtype_name


@dataclass(frozen=True)
class TensorSpecInfo:
    dtype: np.dtype  # np.dtype(object) for DT_STRING (values are bytes)
    shape: tuple[int | None, ...] | None  # None for an unknown dimension; None for an unknown rank


@dataclass(frozen=True)
class SignatureInfo:
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]


def _tensor_spec(name: str, info) -> TensorSpecInfo:
    known = DTYPES.get(info.dtype)
    if known is None:
        raise ServeprofError(
            f"tensor {name!r} has data type {dtype_name(info.dtype)}, which serveprof cannot carry",
            "serve a signature whose tensors are numbers, bools or strings",
        )
    shape = (
        None
        if info.tensor_shape.unknown_rank
        else tuple(dim.size if dim.size >= 0 else None for dim in info.tensor_shape.dim)
    )
    return TensorSpecInfo(known.numpy, shape)


def signature_from_map(signature_map, signature_name: str, model_name: str) -> SignatureInfo:
    """``SignatureInfo`` of ``signature_name`` in a SignatureDefMap message."""
    signatures = signature_map.signature_def
    if signature_name not in signatures:
        known = ", ".join(sorted(signatures)) or "none"
        raise ServeprofError(
            f"model {model_name!r} has no signature {signature_name!r} (it has: {known})",
            "pass one of the model's signature names as signature_name",
        )
    signature = signatures[signature_name]
    return SignatureInfo(
        inputs={name: _tensor_spec(name, info) for name, info in signature.inputs.items()},
        outputs={name: _tensor_spec(name, info) for name, info in signature.outputs.items()},
    )

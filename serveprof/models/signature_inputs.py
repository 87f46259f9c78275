"""Inputs a SavedModel's signature takes, made up from its SignatureDef: for warm-up records and the servability check.

The dtypes and shapes are the SignatureDef's (what GetModelMetadata shows a client),
the batch dimension is set, and the values look like data: floats in [0, 1), uint8 in
[0, 255], the same every time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from serveprof.errors import ServeprofError

STRING = 7  # DT_STRING


def serving_signature(version_dir: Path, signature_name: str = "serving_default"):
    """The SignatureDef ``signature_name`` of the 'serve' MetaGraphDef in ``version_dir``/saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(version_dir) / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags and signature_name in meta_graph.signature_def:
            return meta_graph.signature_def[signature_name]
    raise ServeprofError(
        f"{version_dir} has no signature {signature_name!r} in its 'serve' MetaGraphDef",
        "export the model with a serving_default signature (serveprof export does)",
    )


def input_shape(
    name: str, info, batch_size: int, override: Sequence[int] | None = None, unknown_size: int | None = None
) -> list[int]:
    """``[batch_size, ...]``: the signature's shape, ``override`` (without the batch) or ``unknown_size`` filling gaps."""
    if override is not None:
        return [batch_size, *override]
    if info.tensor_shape.unknown_rank or not info.tensor_shape.dim:
        raise ServeprofError(
            f"input {name!r} has no known shape to build requests from",
            f"give its shape without the batch dimension (input_shapes={{{name!r}: [...]}})",
        )
    dims = [dim.size for dim in info.tensor_shape.dim]
    if any(size < 0 for size in dims[1:]):
        if unknown_size is None:
            raise ServeprofError(
                f"input {name!r} has shape {dims}: sizes other than the batch's are unknown",
                f"give its shape without the batch dimension, e.g. input_shapes={{{name!r}: [640, 640, 3]}}",
            )
        dims = [size if size >= 0 else unknown_size for size in dims]
    return [batch_size, *dims[1:]]


def signature_inputs(
    signature_def,
    batch_size: int,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    unknown_size: int | None = None,
) -> dict:
    """``{input alias: ndarray}`` for one request of ``batch_size`` to ``signature_def``."""
    import numpy as np

    from serveprof.wire.tensor_codec import DTYPES

    rng = np.random.default_rng(0)
    arrays = {}
    for name, info in sorted(signature_def.inputs.items()):
        dtype = DTYPES.get(info.dtype)
        if dtype is None:
            raise ServeprofError(
                f"input {name!r} has a dtype ({info.dtype}) no sample value can be made for",
                "give the requests yourself (a TFRecord of PredictionLog for warm-up)",
            )
        shape = input_shape(name, info, batch_size, (input_shapes or {}).get(name), unknown_size)
        if dtype.enum == STRING:
            arrays[name] = np.full(shape, b"", dtype=object)
        elif dtype.numpy.kind == "f":
            arrays[name] = rng.random(shape).astype(dtype.numpy)
        elif dtype.numpy == np.uint8:
            arrays[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            arrays[name] = np.zeros(shape, dtype=dtype.numpy)
    return arrays

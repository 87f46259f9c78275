"""The int8 variants: the fp32 SavedModel quantized by TensorFlow's TFLite converter, as TF Serving serves TFLite.

- ``int8_dynamic``: dynamic-range quantization (int8 weights; activations quantized
  on the fly by the kernels that can);
- ``int8``: full-integer quantization, calibrated on a small seeded input set from the
  input builder, with only int8 builtin kernels allowed: an op without one makes the
  conversion fail, and the variant is reported as not profiled with the converter's
  reason. Inputs and outputs stay float (quantize/dequantize at the edges), so clients
  send what they send to fp32.

Only TFLite's builtin ops are allowed: tensorflow_model_server builds its interpreters
with ``BuiltinOpResolver`` (tflite_session.cc), which has no TensorFlow (Flex) ops.

The model is written as ``<version>/model.tflite``, the file TF Serving loads with
``--prefer_tflite_model`` (saved_model_bundle_factory.cc). The fp32 signature is stored
in the model's ``signature_defs_metadata`` exactly as TensorFlow's
``tflite::SetSignatureDefMap`` stores it (a flexbuffer map of serialized SignatureDefs),
so TF Serving, and the embedded server, serve the same aliases, dtypes and free batch
dimension as fp32; without it TF Serving would make up a signature from tensor names
(``serving_default_images``) with the batch fixed at 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from serveprof.errors import ServeprofError
from serveprof.variants.catalog import TFLITE_FILE

SIGNATURE_DEFS_METADATA = "signature_defs_metadata"  # tflite::kSignatureDefsMetadataName
SERVING = "serving_default"


class ConversionFailed(ServeprofError):
    """The converter refused the model (an op with no int8 or builtin kernel, say)."""


def calibration_batches(inputs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """One-item batches from arrays of the calibration set (first dimension: the samples)."""
    count = len(next(iter(inputs.values())))
    for index in range(count):
        yield {name: array[index : index + 1] for name, array in inputs.items()}


def convert(reference: str | Path, variant: str, calibration: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The TFLite flatbuffer of ``reference``'s serving signature, quantized as ``variant`` says."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(reference), signature_keys=[SERVING])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "int8":
        if not calibration:
            raise ServeprofError("full-integer quantization needs a calibration set", "pass calibration inputs")
        arrays = dict(calibration)
        converter.representative_dataset = lambda: calibration_batches(arrays)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif variant != "int8_dynamic":
        raise ServeprofError(f"no TFLite conversion for variant {variant!r}", "use int8 or int8_dynamic")
    try:
        return converter.convert()
    except Exception as error:  # the converter raises ConverterError and others, with the op named
        text = str(error).strip()
        lines = [line.strip() for line in text.splitlines() if "error:" in line.lower()] or text.splitlines()[:1]
        raise ConversionFailed(
            f"TensorFlow's TFLite converter could not build {variant} from {reference}: "
            + "; ".join(dict.fromkeys(lines))[:800],
            "the model uses an op without a TFLite builtin"
            + (" int8" if variant == "int8" else "")
            + " kernel, which TF Serving's TFLite interpreter needs; profile the other variants",
        ) from None


def signature_for_tflite(reference_signature, model: bytes):
    """The fp32 SignatureDef with each tensor name replaced by the TFLite tensor behind its alias."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=model)
    runner = interpreter.get_signature_runner(SERVING)
    names = {
        "inputs": {alias: detail["name"] for alias, detail in runner.get_input_details().items()},
        "outputs": {alias: detail["name"] for alias, detail in runner.get_output_details().items()},
    }
    signature = type(reference_signature)()
    signature.CopyFrom(reference_signature)
    for side in ("inputs", "outputs"):
        infos = getattr(signature, side)
        missing = sorted(set(infos) - set(names[side]))
        if missing:
            raise ServeprofError(
                f"the TFLite model has no {side[:-1]} for the signature's {', '.join(missing)}",
                "report this with the model's config",
            )
        for alias, info in infos.items():
            info.name = names[side][alias]
    return signature


def with_signature_defs(model: bytes, signature_defs: Mapping[str, object]) -> bytes:
    """``model`` with ``signature_defs`` stored as tflite::SetSignatureDefMap stores them."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    serialized = {key: signature_defs[key].SerializeToString() for key in sorted(signature_defs)}
    for key, data in serialized.items():
        if b"\0" in data:
            # TF Serving reads each entry back as a C string (tflite::GetSignatureDefMap), so it would be cut short.
            raise ServeprofError(
                f"the serialized SignatureDef {key!r} holds a zero byte, which TF Serving's TFLite loader would cut off",
                "report this with the model's config (a scalar or zero-sized input or output causes it)",
            )
    builder = flexbuffers.Builder()
    with builder.Map():
        for key, data in serialized.items():
            builder.Key(key)
            # Builder.String takes text; C++'s fbb.String(key, std::string) stores any bytes as a string.
            builder._WriteBlob(data, append_zero=True, type_=flexbuffers.Type.STRING)  # noqa: SLF001
    payload = builder.Finish()
    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    existing = [entry for entry in (tree.metadata or []) if _name(entry.name) == SIGNATURE_DEFS_METADATA]
    buffer = schema.BufferT()
    buffer.data = list(payload)
    if existing:
        tree.buffers[existing[0].buffer] = buffer
    else:
        tree.buffers.append(buffer)
        metadata = schema.MetadataT()
        metadata.name = SIGNATURE_DEFS_METADATA
        metadata.buffer = len(tree.buffers) - 1
        tree.metadata = [*(tree.metadata or []), metadata]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def write_tflite(model: bytes, reference_signature, version_dir: str | Path) -> Path:
    """``version_dir``/model.tflite with the fp32 signature in its metadata."""
    signature = signature_for_tflite(reference_signature, model)
    target = Path(version_dir) / TFLITE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(with_signature_defs(model, {SERVING: signature}))
    return target

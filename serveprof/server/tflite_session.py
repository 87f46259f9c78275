"""A TFLite model served as tensorflow_model_server serves one with ``--prefer_tflite_model``.

TF Serving's SavedModelBundleFactory loads ``<version>/model.tflite`` instead of the
SavedModel when the flag is given and the file exists, into a ``TfLiteSession``
(servables/tensorflow/tflite_session.cc) that stands where the Session stands: the same
Predict, Classify and Regress code runs on it. This module is that session on
TensorFlow's TFLite interpreter (``tf.lite.Interpreter``), with TF Serving's rules:

- SignatureDefs come from the model's ``signature_defs_metadata`` (what
  ``tflite::SetSignatureDefMap`` writes); their tensor names must name a tensor of the
  model, with or without the ``:0`` suffix. A model without them gets one made up:
  ``serving_default``, each input and output under its tensor name without the suffix,
  with the shape the interpreter has (batch 1).
- A pool of ``--num_tflite_pools`` interpreters (default: the CPUs this process may
  use), each single-threaded (TF Serving sets ``num_threads = 1``: "reduce contention
  across sessions"); a request takes one, resizes its inputs to the request's shapes
  when they differ, invokes it and gives it back.
- Only builtin ops: TF Serving's ``BuiltinOpResolver`` has no TensorFlow (Flex) ops, so
  a model that needs them is refused at load as TF Serving refuses it.
"""

from __future__ import annotations

import os
import queue
import re
from pathlib import Path

import numpy as np

from serveprof.errors import ServeprofError
from serveprof.wire.status import Code, ServingError

TFLITE_FILE = "model.tflite"  # saved_model_bundle_factory.cc, kTfLiteModelFilename
SIGNATURE_DEFS_METADATA = "signature_defs_metadata"
SERVING = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


def default_pools() -> int:
    """TF Serving's default for --num_tflite_pools: the CPUs this process may be scheduled on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def legacy_name(name: str) -> str:
    """TfToTfLiteLegacyTensorName: a TensorFlow tensor name without its ``:<index>``."""
    return name.split(":", 1)[0]


def read_signature_defs(model: bytes) -> dict:
    """The SignatureDefs stored in ``model``'s metadata, read as TF Serving reads them; {} when there are none."""
    from flatbuffers import flexbuffers
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(model, 0)
    for index in range(root.MetadataLength()):
        metadata = root.Metadata(index)
        if (metadata.Name() or b"").decode() != SIGNATURE_DEFS_METADATA:
            continue
        data = root.Buffers(metadata.Buffer()).DataAsNumpy()
        entries = flexbuffers.GetRoot(bytes(data)).AsMap
        found = {}
        for key, value in zip(entries.Keys, entries.Values, strict=True):
            signature = meta_graph_pb2.SignatureDef()
            # C++ reads each entry as a C string (AsString().c_str()): it ends at the first zero byte.
            raw = value.AsStringBytes.split(b"\0", 1)[0]
            try:
                signature.ParseFromString(raw)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError
                raise ServeprofError(
                    "Cannot parse signature def found in flatbuffer.",
                    "rewrite the model's signature_defs_metadata (tflite::SetSignatureDefMap)",
                ) from None
            found[key.AsKey] = signature
        return found
    return {}


def _flex_ops(model: bytes) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(model, 0)
    codes = [root.OperatorCodes(index).CustomCode() for index in range(root.OperatorCodesLength())]
    return sorted({code.decode() for code in codes if code and code.startswith(b"Flex")})


class _Interpreter:
    """One pooled interpreter and the input shapes it is allocated for."""

    def __init__(self, model: bytes):
        import tensorflow as tf

        self.interpreter = tf.lite.Interpreter(model_content=model, num_threads=1)
        self.interpreter.allocate_tensors()
        self.shapes = {detail["index"]: tuple(detail["shape"]) for detail in self.interpreter.get_input_details()}


class TfLiteSession:
    """``run(feeds, fetches, timeout_ms)`` on tensor names, like SessionRunner, over a pool of interpreters."""

    def __init__(self, model: bytes, pools: int):
        self.model = model
        first = _Interpreter(model)
        self.inputs = {detail["name"]: detail for detail in first.interpreter.get_input_details()}
        self.outputs = {detail["name"]: detail for detail in first.interpreter.get_output_details()}
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        self._pool.put(first)
        for _ in range(max(1, pools) - 1):
            self._pool.put(_Interpreter(model))
        self.interpreters = max(1, pools)

    def resolve(self, name: str, table: dict) -> str:
        """FixTfLiteTensorName: the name as given, else its legacy form."""
        if name in table:
            return name
        for candidate in table:
            if legacy_name(candidate) == legacy_name(name):
                return candidate
        raise ServingError(Code.INTERNAL, f"Unknown tensor '{name}'.")

    def run(self, feeds, fetches, timeout_ms: int = 0) -> list[np.ndarray]:
        """TfLiteSession::Run: ``timeout_ms`` is not honoured there either (it takes no deadline)."""
        resolved = []
        for name, array in feeds:
            try:
                detail = self.inputs[self.resolve(name, self.inputs)]
            except ServingError as error:
                raise ServingError(Code.INTERNAL, f"Missing input TFLite tensor: {name}: {error.message}") from None
            if np.dtype(array.dtype) != np.dtype(detail["dtype"]):
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"input {name} has dtype {np.dtype(array.dtype).name}; the TFLite model takes "
                    f"{np.dtype(detail['dtype']).name}",
                )
            resolved.append((detail["index"], np.ascontiguousarray(array)))
        output_indices = []
        for name in fetches:
            try:
                output_indices.append(self.outputs[self.resolve(name, self.outputs)]["index"])
            except ServingError as error:
                raise ServingError(Code.INTERNAL, f"Missing output TFLite tensor: {name}: {error.message}") from None
        slot = self._pool.get()
        interpreter = slot.interpreter
        try:
            resized = False
            for index, array in resolved:
                if slot.shapes.get(index) != array.shape:
                    interpreter.resize_tensor_input(index, list(array.shape))
                    slot.shapes[index] = array.shape
                    resized = True
            if resized:
                interpreter.allocate_tensors()
            for index, array in resolved:
                interpreter.set_tensor(index, array)
            interpreter.invoke()
            return [interpreter.get_tensor(index) for index in output_indices]
        except (ValueError, RuntimeError) as error:  # the interpreter's own refusal (a shape it cannot take)
            slot.shapes.clear()  # its allocation is unknown now: resize on the next request
            raise ServingError(Code.INTERNAL, f"TFLite interpreter: {error}") from None
        finally:
            self._pool.put(slot)

    def close(self) -> None:
        pass


def _tensor_info(detail):
    from tensorflow.core.protobuf import meta_graph_pb2

    from serveprof.wire.tensor_codec import dtype_of

    info = meta_graph_pb2.TensorInfo()
    info.name = detail["name"]
    info.dtype = dtype_of(np.empty(0, dtype=detail["dtype"])).enum
    for size in detail["shape"]:
        info.tensor_shape.dim.add().size = int(size)
    return info


def signature_defs(model: bytes, session: TfLiteSession) -> dict:
    """The model's SignatureDefs with checked tensor names, or the one TF Serving makes up without them."""
    from tensorflow.core.protobuf import meta_graph_pb2

    found = read_signature_defs(model)
    if found:
        for key, signature in found.items():
            for side, table in (("input", session.inputs), ("output", session.outputs)):
                for alias, info in getattr(signature, f"{side}s").items():
                    try:
                        info.name = session.resolve(info.name, table)
                    except ServingError as error:
                        raise ServeprofError(
                            f"SignatureDef {key}: Signature {side} {alias} references an unknown tensor: "
                            f"{error.message}",
                            "rewrite the model's signature_defs_metadata with the model's tensor names",
                        ) from None
        return found
    made = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for detail in session.inputs.values():
        made.inputs[legacy_name(detail["name"])].CopyFrom(_tensor_info(detail))
    for detail in session.outputs.values():
        made.outputs[legacy_name(detail["name"])].CopyFrom(_tensor_info(detail))
    return {SERVING: made}


def load_tflite(version_dir: Path, pools: int):
    """(TfLiteSession, SignatureDefs) of ``version_dir``/model.tflite; ServeprofError when TF Serving would refuse it."""
    path = Path(version_dir) / TFLITE_FILE
    model = path.read_bytes()
    flex = _flex_ops(model)
    if flex:
        raise ServeprofError(
            f"cannot load {path}: it uses TensorFlow (Flex) ops {', '.join(flex)}, which TF Serving's TFLite "
            "interpreter does not have (Cannot build Interpreter from buffer)",
            "convert the model with TFLite builtin ops only (converter.target_spec.supported_ops = [TFLITE_BUILTINS])",
        )
    try:
        session = TfLiteSession(model, pools)
    except ValueError as error:
        reason = re.sub(r"\s+", " ", str(error))[:400]
        raise ServeprofError(
            f"cannot load {path} into a TFLite interpreter: {reason}",
            "check the file is a TFLite flatbuffer (the one TFLiteConverter wrote)",
        ) from None
    return session, signature_defs(model, session)

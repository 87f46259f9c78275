"""The ``tftrt`` variant: the fp32 SavedModel converted by TF-TRT (TensorRT engines in float16) for a GPU.

It needs a TensorFlow built with TensorRT, TensorRT's libraries and a GPU, on the node
that exports and on the one that serves (a TF Serving GPU image has them). The config
check refuses ``tftrt`` before any job when ``server.gpu`` is false
(catalog.serving_problem); ``tensorrt_problem`` says what is missing on the node that
exports, and the variant is then reported as not profiled with that reason. The
engines are built at the first request of each input shape, which the procedure's
first-init and warm-up requests absorb, as with XLA.
"""

from __future__ import annotations

from pathlib import Path

from serveprof.errors import ServeprofError

FIX = (
    "export tftrt on a GPU node whose TensorFlow is built with TensorRT (the tensorflow package with "
    "nvidia-tensorrt, or NVIDIA's TensorFlow container), or remove tftrt from variants (docs/variants.md)"
)


def tensorrt_problem() -> str | None:
    """Why TF-TRT cannot convert here, or None when it can."""
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils as trt_utils
    except ImportError:
        return "this TensorFlow has no TF-TRT (tensorflow.compiler.tf2tensorrt is missing)"
    if not trt_utils.is_tensorrt_enabled():
        return "this TensorFlow was built without TensorRT (is_tensorrt_enabled() is false)"
    if trt_utils.get_loaded_tensorrt_version() == (0, 0, 0):
        return "TensorRT's libraries (libnvinfer) cannot be loaded"
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return "TensorFlow sees no GPU"
    return None


def export_tftrt(reference: str | Path, out: str | Path) -> str:
    problem = tensorrt_problem()
    if problem:
        raise ServeprofError(f"variant tftrt cannot be built here: {problem}", FIX)
    from tensorflow.python.compiler.tensorrt import trt_convert as trt

    converter = trt.TrtGraphConverterV2(
        input_saved_model_dir=str(reference),
        input_saved_model_signature_key="serving_default",
        precision_mode=trt.TrtPrecisionMode.FP16,
    )
    converter.convert()
    converter.save(str(out))
    return "TF-TRT, float16 engines, built at the first request of each input shape"

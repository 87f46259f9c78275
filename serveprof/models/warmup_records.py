"""Warm-up records for a SavedModel: ``assets.extra/tf_serving_warmup_requests``, as TF Serving reads them.

One PredictionLog per batch size, each holding a PredictRequest for ``serving_default``
whose inputs have the signature's dtypes and shapes with the batch dimension set. TF
Serving (and ``serveprof serve``) replays them before the model becomes AVAILABLE, so
the first executions of each batch size (executor set-up, kernel choice, memory pools)
happen at load time, not in the first measured requests (docs/models.md, "Warm-up").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.models.signature_inputs import serving_signature, signature_inputs
from serveprof.server.warmup import MAX_RECORDS, REQUESTS_FILE, warmup_path


def write_warmup_records(
    version_dir: str | os.PathLike,
    batch_sizes: Sequence[int],
    model_name: str = "default",
    signature_name: str = "serving_default",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write one warm-up Predict per batch size into ``version_dir``; return the file written."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from serveprof.wire.tensor_codec import fill_tensor_proto

    version_dir = Path(version_dir)
    sizes = sorted({int(size) for size in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ServeprofError(
            f"warm-up batch sizes {list(batch_sizes)} must be whole numbers of at least 1",
            "give batch sizes such as 1,8,32",
        )
    if len(sizes) > MAX_RECORDS:
        raise ServeprofError(
            f"{len(sizes)} warm-up batch sizes exceed TF Serving's {MAX_RECORDS} records",
            f"give at most {MAX_RECORDS} batch sizes",
        )
    signature = serving_signature(version_dir, signature_name)
    target = warmup_path(version_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{REQUESTS_FILE}.writing")
    try:
        with tf.io.TFRecordWriter(str(scratch)) as writer:
            for batch_size in sizes:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model_name
                request.model_spec.signature_name = signature_name
                for name, array in signature_inputs(signature, batch_size, input_shapes).items():
                    fill_tensor_proto(array, request.inputs[name])
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    return target

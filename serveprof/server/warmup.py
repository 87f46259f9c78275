"""Model warm-up as tensorflow_model_server runs it: replay ``assets.extra/tf_serving_warmup_requests``.

The file is a TFRecord of PredictionLog protos (servables/tensorflow/saved_model_warmup*.cc).
Each record's request is run through the loaded servable, ``--num_request_iterations_for_warmup``
times (default 1), before the model becomes AVAILABLE; the first runs of a graph
(executor set-up, kernel selection, memory pools) happen there instead of in the
first client requests. The limits and errors are TF Serving's: at most 1000 records,
a record that is not a PredictionLog or a file that is not a TFRecord fails the load,
and Predict, Classify, Regress and MultiInference logs are replayed while SessionRun
and PredictStreamed logs are refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.wire.status import Code, ServingError

log = logging.getLogger("serveprof.serve")

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000


@dataclass(frozen=True)
class WarmupResult:
    records: int
    seconds: float


def warmup_path(version_dir: str | Path) -> Path:
    return Path(version_dir) / ASSETS_EXTRA / REQUESTS_FILE


def run_warmup(servable, version_dir: Path, iterations: int, settings, metrics=None) -> WarmupResult | None:
    """Replay the warm-up records of ``version_dir`` on ``servable``; None when there is no warm-up file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(version_dir)
    if not path.is_file():
        log.info("No warmup data file found at %s", path)
        return None
    iterations = iterations if iterations > 0 else 1
    log.info(
        "Starting to read warmup data for model at %s with model-warmup-options num_request_iterations: %d",
        path,
        iterations,
    )
    started = time.monotonic()
    records, status = 0, "OK"
    try:
        for record in tf.compat.v1.io.tf_record_iterator(str(path)):
            log_entry = prediction_log_pb2.PredictionLog()
            try:
                log_entry.ParseFromString(record)
            except Exception:  # protobuf's DecodeError
                raise ServeprofError(
                    f"Failed to parse warmup record: {record[:64]!r} from {path}",
                    "write the file with TFRecordWriter and PredictionLog records "
                    "(serveprof export --warmup-batch-sizes writes one)",
                ) from None
            for _ in range(iterations):
                _replay(servable, log_entry, settings)
            records += 1
            if records > MAX_RECORDS:
                raise ServeprofError(
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                    f"keep at most {MAX_RECORDS} records in the warm-up file",
                )
    except tf.errors.DataLossError as error:
        status = f"DATA_LOSS: {error.message}"
        raise ServeprofError(
            f"{error.message}. Please verify your warmup data is in TFRecord format.",
            f"rewrite {path} as a TFRecord file of PredictionLog protos",
        ) from None
    except ServeprofError as error:
        status = f"INVALID_ARGUMENT: {error.problem}"
        raise
    except Exception as error:
        status = f"{error.code.name if isinstance(error, ServingError) else 'UNKNOWN'}: {error}"
        raise ServeprofError(
            f"model warm-up failed on record {records + 1} of {path}: {error}",
            "fix or remove the warm-up record (it must be a request this model accepts), or start "
            "with --enable_model_warmup=false",
        ) from None
    finally:
        seconds = time.monotonic() - started
        if metrics is not None:
            metrics.warmup(str(version_dir), status, seconds, records)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        records,
        int(seconds * 1e6),
    )
    return WarmupResult(records, seconds)


def _replay(servable, entry, settings) -> None:
    """RunWarmupRequest: the logged request through the same code paths as a client's, answer dropped."""
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    from serveprof.server.core import (
        run_classify,
        run_multi_inference,
        run_predict,
        run_regress,
        signature,
        tensor_converter,
    )

    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        runner = signature(servable, request.model_spec.signature_name)
        run_predict(servable, runner, dict(request.inputs), tensor_converter(1 << 62), list(request.output_filter))
    elif kind == "classify_log":
        run_classify(servable, entry.classify_log.request, classification_pb2.ClassificationResponse(), settings)
    elif kind == "regress_log":
        run_regress(servable, entry.regress_log.request, regression_pb2.RegressionResponse(), settings)
    elif kind == "multi_inference_log":
        run_multi_inference(
            servable, entry.multi_inference_log.request, inference_pb2.MultiInferenceResponse(), settings
        )
    elif kind in ("session_run_log", "predict_streamed_log"):
        number = entry.DESCRIPTOR.fields_by_name[kind].number
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")

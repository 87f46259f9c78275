"""What batch-wrapping a batch-1 model costs, against native batching, in one run.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/batch_wrap.py [--repeats 20] [--batches 1 4 8]

The zoo detectors cannot be downloaded here, so a MobileNetV2 (alpha 0.35, 96x96,
random weights) stands in: saved once with its batch fixed at 1 (as the zoo's are)
and once with a free batch. serveprof.models.batching wraps the fixed one. For each
batch size B the three are timed round-robin, in-process, warm: the native batched
model on B images, the wrapped model on B images, and B calls of the fixed model.
Prints the median ms of each and the ratios (one run, side by side: the machine is
shared and noisy, so only the ratios travel).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 96


def save(model, path: Path, batch: int | None) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec([batch, SIZE, SIZE, 3], tf.uint8, name="input_tensor")])
    def serve(input_tensor):
        return {"scores": model(tf.cast(input_tensor, tf.float32) / 255.0, training=False)}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def interleaved_medians(calls: dict, repeats: int) -> dict[str, float]:
    """Median ms of each call, timed round-robin so load on the shared machine hits all alike."""
    for call in calls.values():
        call()  # the first call at a shape traces
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from serveprof.models.batching import save_serving

    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        save(model, root / "native", None)
        save(model, root / "fixed", 1)
        fixed_model = tf.saved_model.load(str(root / "fixed"))
        save_serving(fixed_model, fixed_model.signatures["serving_default"], root / "wrapped")
        native, wrapped, fixed = (
            tf.saved_model.load(str(root / name)).signatures["serving_default"]
            for name in ("native", "wrapped", "fixed")
        )
        for batch in args.batches:
            images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8))
            singles = [images[i : i + 1] for i in range(batch)]
            row = {
                "batch": batch,
                **interleaved_medians(
                    {
                        "native_ms": lambda images=images: native(input_tensor=images),
                        "wrapped_ms": lambda images=images: wrapped(input_tensor=images),
                        "single_calls_ms": lambda singles=singles: [fixed(input_tensor=one) for one in singles],
                    },
                    args.repeats,
                ),
            }
            row["wrapped_over_native"] = row["wrapped_ms"] / row["native_ms"]
            row["wrapped_over_single_calls"] = row["wrapped_ms"] / row["single_calls_ms"]
            print(json.dumps({key: round(value, 3) for key, value in row.items()}), flush=True)


if __name__ == "__main__":
    main()

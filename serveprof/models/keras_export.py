"""A keras.applications model as a SavedModel with a named, batchable ``serving_default``.

Saved with ``keras.export.ExportArchive``: it tracks the model's variables so that
TensorFlow's Session loader (tensorflow_model_server's) restores every one of them. A
``tf.Module`` holding the model, saved with ``tf.saved_model.save``, loads but fails its
first request there with "Could not find variable ..." (tensorflow/serving#2226). The
endpoint gets a named input signature, so the input is ``images``, not an internal
tensor name such as ``keras_tensor_1041`` as with ``model.export()``, and each variable
is stored once (docs/models.md gives the sizes).
"""

from __future__ import annotations

from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.models.batching import SERVING
from serveprof.models.keras_apps import bad_arguments, input_shape, keras_home, resolve_application
from serveprof.models.log import log, timed

INPUT_NAME = "images"
OUTPUT_NAME = "predictions"


def export_keras(application: str, input_size: list[int] | None, weights: str, out: Path) -> tuple[int, int]:
    """Build and save; returns the (height, width) the model takes."""
    import tensorflow as tf

    constructor = resolve_application(application)
    with timed("export", f"building keras.applications.{application} with {weights} weights"):
        try:
            model = constructor(
                weights="imagenet" if weights == "imagenet" else None, input_shape=input_shape(input_size)
            )
        except ValueError as error:
            raise bad_arguments(application, input_size, weights, error) from None
        except Exception as error:
            if "URL fetch failure" not in str(error):
                raise
            # Acquired on another machine (a login node) whose Keras cache this one does not share.
            raise ServeprofError(
                f"the ImageNet weights of {application} are not in Keras's cache on this machine "
                f"({keras_home()}/models) and cannot be downloaded: {error}",
                "put KERAS_HOME on a file system the export jobs share with the acquisition, "
                "or copy the weights file there, or set weights: random",
            ) from None
    _, height, width, channels = model.input_shape
    log("export", f"{application}: input [None, {height}, {width}, {channels}], {model.count_params():,} parameters")

    import keras

    archive = keras.export.ExportArchive()
    with timed("export", "tracing the serving signature"):
        archive.add_endpoint(
            name=SERVING,
            fn=lambda images: {OUTPUT_NAME: model(images, training=False)},
            input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)],
        )
    with timed("export", f"saving SavedModel to {out}"):
        archive.write_out(str(out), verbose=False)
    return height, width

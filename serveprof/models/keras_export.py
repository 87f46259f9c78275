"""A keras.applications model as a SavedModel with a named, batchable ``serving_default``.

Saved with ``tf.saved_model.save`` and an explicit signature, not Keras 3's
``model.export()``: that one names the input after an internal tensor
(``keras_tensor_1041``) and stores every variable twice (keras-team/keras#23553).
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
            model = constructor(weights="imagenet" if weights == "imagenet" else None, input_shape=input_shape(input_size))
        except ValueError as error:
            raise bad_arguments(application, input_size, weights, error) from None
        except Exception as error:
            if "URL fetch failure" not in str(error):
                raise
            # Acquired on another machine (a login node) whose Keras cache this one does not share.
            raise ServeprofError(f"the ImageNet weights of {application} are not in Keras's cache on this machine "
                                 f"({keras_home()}/models) and cannot be downloaded: {error}",
                                 "put KERAS_HOME on a file system the export jobs share with the acquisition, "
                                 "or copy the weights file there, or set weights: random") from None
    _, height, width, channels = model.input_shape
    log("export", f"{application}: input [None, {height}, {width}, {channels}], {model.count_params():,} parameters")

    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)])
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    module.serve = serve
    with timed("export", "tracing the serving signature"):
        concrete = serve.get_concrete_function()
    with timed("export", f"saving SavedModel to {out}"):
        tf.saved_model.save(module, str(out), signatures={SERVING: concrete})
    return height, width

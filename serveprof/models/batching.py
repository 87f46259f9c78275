"""Save a signature as ``serving_default`` of a new SavedModel, batch-wrapping it if its batch is fixed at 1.

The TF2 Detection Zoo models take ``input_tensor`` uint8 ``[1, None, None, 3]``
(tensorflow/models#10317), so TF Serving would refuse any batch above 1. The wrapper's
signature takes ``[None, ...]`` under the same input names and runs the original
signature once per image with ``tf.map_fn``, stacking each output per image. That
makes batch-B requests servable; it does not make them cheaper than B single-image
calls, because the model still runs image by image (``map_fn`` may overlap a few
iterations on spare cores, nothing more).
"""

from __future__ import annotations

from pathlib import Path

from serveprof.models.log import log, timed

SERVING = "serving_default"


def batch_fixed_at_one(signature) -> bool:
    _, inputs = signature.structured_input_signature
    return any(spec.shape.rank and spec.shape[0] == 1 for spec in inputs.values())


def _serving_function(signature, wrap: bool, jit_compile: bool = False):
    import tensorflow as tf

    _, input_specs = signature.structured_input_signature
    names = sorted(input_specs)
    batched = [
        tf.TensorSpec([None, *input_specs[name].shape[1:]], input_specs[name].dtype, name=name) for name in names
    ]
    output_specs = signature.structured_outputs

    def per_item(items):
        outputs = signature(**{name: item[tf.newaxis] for name, item in zip(names, items, strict=True)})
        return {key: value[0] if value.shape.rank else value for key, value in outputs.items()}

    item_signature = {
        key: tf.TensorSpec(spec.shape[1:], spec.dtype) if spec.shape.rank else spec
        for key, spec in output_specs.items()
    }

    def serve(*tensors):
        if not wrap:
            return signature(**dict(zip(names, tensors, strict=True)))
        return tf.map_fn(per_item, tuple(tensors), fn_output_signature=item_signature)

    return tf.function(
        serve,
        input_signature=batched if wrap else [input_specs[name] for name in names],
        jit_compile=True if jit_compile else None,
    )


def save_serving(owner, signature, out: str | Path, jit_compile: bool = False) -> bool:
    """Save ``signature`` of the loaded SavedModel ``owner`` as ``serving_default`` at ``out``.

    Returns whether it was batch-wrapped. ``owner`` is tracked by the new module, so
    its variables are saved (once) with it. ``jit_compile`` marks the serving function
    for XLA (the ``xla`` variant).
    """
    import tensorflow as tf

    wrap = batch_fixed_at_one(signature)
    module = tf.Module()
    module.owner = owner
    module.serve = _serving_function(signature, wrap, jit_compile)
    with timed("export", "tracing the serving signature" + (" (batch-wrapped with tf.map_fn)" if wrap else "")):
        concrete = module.serve.get_concrete_function()
    inputs = {spec.name: (spec.dtype.name, spec.shape.as_list()) for spec in concrete.structured_input_signature[0]}
    log("export", f"{SERVING} inputs: {inputs}; outputs: {sorted(concrete.structured_outputs)}")
    with timed("export", f"saving SavedModel to {out}"):
        tf.saved_model.save(module, str(out), signatures={SERVING: concrete})
    return wrap

"""A SavedModel's serving signature as one flat GraphDef, and a GraphDef saved back as a SavedModel.

``frozen_signature`` folds the variables into constants and inlines every function
(TensorFlow's ``convert_variables_to_constants_v2``), so the graph holds no variable and
no function call: what the ``frozen`` variant serves, and what the precision rewrite
works on. ``save_graph`` writes a GraphDef as a SavedModel with a ``serving_default``
SignatureDef through TensorFlow's SavedModelBuilder, so it loads in the Session loader
as tensorflow_model_server loads any SavedModel, and keeps the aliases of the original
signature: clients send the same inputs and get the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serveprof.errors import ServeprofError

SERVING = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass
class FlatGraph:
    """A GraphDef and the tensors its signature reads and returns, by alias."""

    graph_def: object  # tensorflow.core.framework.graph_pb2.GraphDef
    inputs: dict[str, str]  # alias -> tensor name ("images:0")
    outputs: dict[str, str]


def frozen_signature(version_dir: str | Path, signature_name: str = SERVING) -> FlatGraph:
    """``signature_name`` of the SavedModel at ``version_dir``, frozen and inlined."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    loaded = tf.saved_model.load(str(version_dir))
    if signature_name not in loaded.signatures:
        raise ServeprofError(
            f"{version_dir} has no signature {signature_name!r}", "export the model with serveprof export first"
        )
    signature = loaded.signatures[signature_name]
    frozen = convert_variables_to_constants_v2(signature)
    _, specs = signature.structured_input_signature
    # The frozen function keeps the signature's data inputs in its flattened (sorted) order.
    aliases = sorted(specs)
    if len(aliases) != len(frozen.inputs):
        raise ServeprofError(
            f"freezing {version_dir} left {len(frozen.inputs)} inputs for the signature's {len(aliases)}",
            "report this with the model's config; the frozen graph cannot be matched to the signature",
        )
    inputs = {}
    for alias, tensor in zip(aliases, frozen.inputs, strict=True):
        if tensor.dtype != specs[alias].dtype:
            raise ServeprofError(
                f"freezing {version_dir}: input {alias!r} became {tensor.name} of dtype {tensor.dtype.name}, "
                f"not {specs[alias].dtype.name}",
                "report this with the model's config",
            )
        inputs[alias] = tensor.name
    # Likewise its outputs: the signature's dict, flattened in sorted order.
    output_aliases = sorted(signature.structured_outputs)
    if len(output_aliases) != len(frozen.outputs):
        raise ServeprofError(
            f"freezing {version_dir} left {len(frozen.outputs)} outputs for the signature's {len(output_aliases)}",
            "report this with the model's config; the frozen graph cannot be matched to the signature",
        )
    outputs = {alias: tensor.name for alias, tensor in zip(output_aliases, frozen.outputs, strict=True)}
    return FlatGraph(frozen.graph.as_graph_def(), inputs, outputs)


def save_graph(flat: FlatGraph, out: str | Path) -> None:
    """Write ``flat`` as a SavedModel (tag ``serve``, one ``serving_default`` signature) into ``out``."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(flat.graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:

        def info(name: str):
            return tf.compat.v1.saved_model.utils.build_tensor_info(graph.get_tensor_by_name(name))

        signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
            inputs={alias: info(name) for alias, name in flat.inputs.items()},
            outputs={alias: info(name) for alias, name in flat.outputs.items()},
            method_name=PREDICT_METHOD,
        )
        builder = tf.compat.v1.saved_model.Builder(str(out))
        builder.add_meta_graph_and_variables(
            session, [tf.saved_model.SERVING], signature_def_map={SERVING: signature}, strip_default_attrs=True
        )
        builder.save()

"""Node names to Keras layers and blocks, and each layer's parameter count, from a SavedModel alone.

A Keras export names each variable by its path, ``<layer>/<weight>`` (``block_1_expand/
kernel``, ``block_1_expand_BN/moving_mean``), and each op by its name scopes, the call
wrappers first: ``StatefulPartitionedCall/.../mobilenetv2_1.00_224_1/block_1_expand_1/
convolution``. So:

- a layer's parameters are the elements of the variables under its name, trainable or
  not, which is what Keras's ``count_params`` counts;
- an op belongs to the first scope of its name that is a layer with variables, once the
  suffix TensorFlow added to the scope when the function was traced (``_1``) is taken
  off; that suffix is learnt from the layers with variables, and taken off the layers
  without any (activations, pads, additions) where they carry it too; an op under no
  such scope belongs to the scope after the model's own;
- a block is a run of layers: a layer whose name matches ``block_pattern`` (its first
  group names the block: ``block_1`` of ``block_1_expand``) starts or joins that block,
  and one that does not joins the block of the layer that ran before it.

Models whose variables do not carry layer names (a TF1 export, a zoo model re-saved
under generic names) still get layers from their name scopes, with no parameter counts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# keras.applications' naming: block_1_* (MobileNetV2), block1a_* (EfficientNet), conv2_block1_* (ResNet: the stage
# conv2), mixed5 (Inception), stem_*, top_*; bn_Conv1 joins Conv1.
DEFAULT_BLOCK_PATTERN = r"^(?:bn_)?((?:block|conv|mixed|stage|stem|top)_?\d*[a-z]?)(?:_|$)"
CALL_WRAPPERS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
VARIABLE_OPS = frozenset({"VarHandleOp", "VariableV2", "Variable"})
CALL_SUFFIX = re.compile(r"^(.*?)(_\d+)$")
PLUMBING = "(function calls)"


def parameter_counts(version_dir: str | Path) -> dict[str, int]:
    """``{layer: parameters}`` from the variables of the SavedModel's 'serve' graph ({} when it has none)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(version_dir) / "saved_model.pb").read_bytes())
    counts: Counter = Counter()
    for meta_graph in saved_model.meta_graphs:
        if "serve" not in meta_graph.meta_info_def.tags:
            continue
        seen = set()
        for node in meta_graph.graph_def.node:
            if node.op not in VARIABLE_OPS:
                continue
            name = node.attr["shared_name"].s.decode() or node.name
            if name in seen or "/" not in name:
                continue
            seen.add(name)
            size = 1
            for dim in node.attr["shape"].shape.dim:
                size *= max(dim.size, 0)
            counts[name.rsplit("/", 1)[0]] += size
        break
    return dict(counts)


def _scopes(node_name: str) -> list[str]:
    parts = node_name.split("/")[:-1]  # the last part is the op's own name
    while parts and parts[0] in CALL_WRAPPERS:
        parts.pop(0)
    return parts


def call_suffix(node_names: Iterable[str], layers: Iterable[str]) -> str:
    """The suffix tracing added to layer scopes (``_1``), as the layers with variables show it; '' if none."""
    known = set(layers)
    seen: Counter = Counter()
    for name in node_names:
        for scope in _scopes(name):
            if scope in known:
                seen[""] += 1
                break
            match = CALL_SUFFIX.match(scope)
            if match and match.group(1) in known:
                seen[match.group(2)] += 1
                break
    return seen.most_common(1)[0][0] if seen else ""


@dataclass(frozen=True)
class LayerMap:
    """Where each node's time goes: its layer, found from name scopes."""

    layers: frozenset[str]  # layers with variables
    suffix: str  # the tracing suffix of layer scopes
    model_scope: str | None  # the scope holding the layers (the Keras model's), if any

    def layer_of(self, node_name: str) -> str:
        if node_name.startswith("Func/"):
            return PLUMBING  # the inliner's input and output identities of a function call
        scopes = _scopes(node_name)
        for scope in scopes:
            bare = scope[: -len(self.suffix)] if self.suffix and scope.endswith(self.suffix) else scope
            if bare in self.layers:
                return bare
        if self.model_scope is not None and self.model_scope in scopes:
            position = scopes.index(self.model_scope)
            if position + 1 < len(scopes):
                scope = scopes[position + 1]
                return scope[: -len(self.suffix)] if self.suffix and scope.endswith(self.suffix) else scope
        if scopes:
            return scopes[0]
        return "(graph)"


def layer_map(node_names: list[str], layers: Iterable[str]) -> LayerMap:
    layers = frozenset(layers)
    suffix = call_suffix(node_names, layers)
    holders: Counter = Counter()
    for name in node_names:
        scopes = _scopes(name)
        for position, scope in enumerate(scopes):
            bare = scope[: -len(suffix)] if suffix and scope.endswith(suffix) else scope
            if bare in layers and position > 0:
                holders[scopes[position - 1]] += 1
                break
    model_scope = holders.most_common(1)[0][0] if holders else None
    return LayerMap(layers, suffix, model_scope)


def blocks(layers_in_order: list[str], pattern: str = DEFAULT_BLOCK_PATTERN) -> dict[str, str]:
    """``{layer: block}``: a matching layer names its block, any other joins the block of the layer before it."""
    expression = re.compile(pattern, re.IGNORECASE)
    found: dict[str, str] = {}
    current = None
    for layer in layers_in_order:
        if layer.startswith("("):  # not a layer: (function calls), (graph)
            found[layer] = layer
            continue
        match = expression.search(layer)
        if match:
            current = match.group(1) if match.groups() else match.group(0)
        elif current is None:
            current = layer
        found[layer] = current
    return found


def layers_by_block(assignment: Mapping[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for layer, block in assignment.items():
        grouped.setdefault(block, []).append(layer)
    return grouped

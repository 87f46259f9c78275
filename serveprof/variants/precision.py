"""A frozen graph in reduced precision: float16 or bfloat16 weights and compute, float32 at the edges.

Every node whose float32 type attributes can become the lower type, with a kernel for
it on the serving device (TensorFlow's kernel registry says so), is changed: its
attributes, and for a constant its value, so weights are stored in the lower type.
A node without such a kernel (non-max suppression has no bfloat16 kernel on a CPU)
stays in float32. A ``Cast`` is put on every edge whose two ends now disagree, so the
signature's inputs and outputs keep their dtype and the client sends what it sent to
fp32. This is the rewrite TF-TRT and Keras's mixed precision leave to a device; done
on the exported graph, it gives one SavedModel every backend serves the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from serveprof.errors import ServeprofError
from serveprof.variants.graph import FlatGraph

LOWER = {"fp16": "float16", "bf16": "bfloat16"}
# Attributes that name a parameter dtype the lower-precision kernels keep in float32
# (FusedBatchNorm's scale, offset, mean and variance: U).
KEPT_ATTRS = frozenset({"U"})
# Nodes left as they are: the signature's inputs keep their dtype, and a cast is already a cast.
KEPT_OPS = frozenset({"Placeholder", "Cast", "NoOp"})


@dataclass
class Lowered:
    flat: FlatGraph
    converted: Counter = field(default_factory=Counter)  # op type -> nodes now in the lower type
    kept: Counter = field(default_factory=Counter)  # op type -> float32 nodes left in float32
    casts: int = 0

    def note(self, variant: str) -> str:
        kept = ", ".join(f"{op} ×{count}" for op, count in sorted(self.kept.items())) or "none"
        return (
            f"{sum(self.converted.values())} nodes in {LOWER[variant]}, {sum(self.kept.values())} float32 nodes "
            f"left in float32 (no {LOWER[variant]} kernel: {kept}), {self.casts} casts at the boundaries"
        )


def _kernel_constraints(op_type: str, device: str) -> list[dict[str, set[int]]]:
    from tensorflow.python.framework import kernels

    found = []
    for kernel in kernels.get_registered_kernels_for_op(op_type).kernel:
        if kernel.device_type == device:
            found.append({c.name: set(c.allowed_values.list.type) for c in kernel.constraint})
    return found


class _Kernels:
    """Whether a node's changed type attributes have a kernel on ``device``; cached per op type and attribute set."""

    def __init__(self, device: str, target: int):
        self.device, self.target = device, target
        self._cache: dict[tuple, bool] = {}

    def allows(self, op_type: str, changed: frozenset[str]) -> bool:
        key = (op_type, changed)
        if key not in self._cache:
            self._cache[key] = any(
                all(self.target in allowed for name, allowed in constraints.items() if name in changed)
                for constraints in _kernel_constraints(op_type, self.device)
            )
        return self._cache[key]


def _float_attrs(node, float_enum: int) -> frozenset[str]:
    names = set()
    for name, value in node.attr.items():
        if name in KEPT_ATTRS:
            continue
        if value.WhichOneof("value") == "type" and value.type == float_enum:
            names.add(name)
        elif value.WhichOneof("value") == "list" and float_enum in value.list.type:
            names.add(name)
    return frozenset(names)


def _arg_types(args, node) -> list[tuple[str | None, int | None, int]]:
    """Per tensor of an op's inputs or outputs: (type attribute it follows, index in a type list, fixed type)."""
    expanded: list[tuple[str | None, int | None, int]] = []
    for arg in args:
        if arg.type_list_attr:
            count = len(node.attr[arg.type_list_attr].list.type)
            expanded += [(arg.type_list_attr, index, 0) for index in range(count)]
        else:
            count = node.attr[arg.number_attr].i if arg.number_attr else 1
            expanded += [(arg.type_attr or None, None, arg.type)] * count
    return expanded


def lower_precision(flat: FlatGraph, variant: str, device: str = "CPU") -> Lowered:
    """``flat`` with its float32 compute and constants in ``variant``'s type (fp16 or bf16) on ``device``."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2
    from tensorflow.python.framework import op_def_registry, tensor_util

    if variant not in LOWER:
        raise ServeprofError(f"no precision rewrite for variant {variant!r}", f"use one of {', '.join(LOWER)}")
    float_enum = tf.float32.as_datatype_enum
    lower = tf.as_dtype(LOWER[variant])
    kernels = _Kernels(device, lower.as_datatype_enum)
    result = Lowered(flat)
    # Which attributes of each node change.
    changed: dict[str, frozenset[str]] = {}
    for node in flat.graph_def.node:
        attrs = _float_attrs(node, float_enum)
        if not attrs or node.op in KEPT_OPS:
            continue
        if node.op == "Const" or kernels.allows(node.op, attrs):
            changed[node.name] = attrs
            result.converted[node.op] += 1
        else:
            result.kept[node.op] += 1

    nodes = {node.name: node for node in flat.graph_def.node}

    def dtype_of(node_name: str, index: int, outputs: bool) -> int | None:
        """The dtype, after the rewrite, of a node's ``index``-th output (or input)."""
        node = nodes[node_name]
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            return None
        args = _arg_types(op_def.output_arg if outputs else op_def.input_arg, node)
        if index >= len(args):
            return None
        attr, position, fixed = args[index]
        if attr is None:
            return fixed or None
        value = node.attr[attr]
        original = value.list.type[position] if position is not None else value.type
        if original == float_enum and attr in changed.get(node_name, ()):
            return lower.as_datatype_enum
        return original

    rewritten = graph_pb2.GraphDef()
    rewritten.CopyFrom(flat.graph_def)
    casts: dict[tuple[str, int], str] = {}
    extra = []

    def cast(source: str, source_index: int, to: int) -> str:
        key = (f"{source}:{source_index}", to)
        if key not in casts:
            name = f"{source}/serveprof_cast_{source_index}_to_{tf.as_dtype(to).name}"
            from_type = dtype_of(source, source_index, outputs=True)
            extra.append(
                tf.compat.v1.NodeDef(
                    name=name,
                    op="Cast",
                    input=[source if source_index == 0 else f"{source}:{source_index}"],
                    attr={
                        "SrcT": tf.compat.v1.AttrValue(type=from_type),
                        "DstT": tf.compat.v1.AttrValue(type=to),
                        "Truncate": tf.compat.v1.AttrValue(b=False),
                    },
                )
            )
            casts[key] = name
        return casts[key]

    for node in rewritten.node:
        for name in changed.get(node.name, ()):
            value = node.attr[name]
            if value.WhichOneof("value") == "type":
                value.type = lower.as_datatype_enum
            else:
                value.list.type[:] = [lower.as_datatype_enum if t == float_enum else t for t in value.list.type]
        if node.op == "Const" and node.name in changed:
            array = tensor_util.MakeNdarray(node.attr["value"].tensor)
            node.attr["value"].tensor.CopyFrom(
                tensor_util.make_tensor_proto(np.asarray(array).astype(lower.as_numpy_dtype), dtype=lower)
            )
        data_index = 0
        for position, source in enumerate(node.input):
            if source.startswith("^"):
                continue
            producer, _, index_text = source.partition(":")
            index = int(index_text or 0)
            have = dtype_of(producer, index, outputs=True)
            want = dtype_of(node.name, data_index, outputs=False)
            data_index += 1
            if have is None or want is None or have == want:
                continue
            node.input[position] = cast(producer, index, want)
    outputs = {}
    for alias, tensor in flat.outputs.items():
        producer, _, index_text = tensor.partition(":")
        index = int(index_text or 0)
        have = dtype_of(producer, index, outputs=True)
        outputs[alias] = tensor
        if have == lower.as_datatype_enum:
            outputs[alias] = f"{cast(producer, index, float_enum)}:0"
    rewritten.node.extend(extra)
    result.casts = len(extra)
    result.flat = FlatGraph(rewritten, dict(flat.inputs), outputs)
    return result

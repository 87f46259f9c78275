"""Per-op, per-layer and per-block tables from a trace: mean and std over the traced runs, and share of the time.

A node's time is its ``all_end_rel_micros`` in the step stats (from its scheduling to
its end). Nodes run side by side on the inter-op threads, so the sum of node times can
exceed a run's wall time; shares are of that sum, which the markdown says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serveprof.profile.layers import LayerMap, blocks, layer_map
from serveprof.profile.trace import Trace

# The executor's own bookkeeping nodes, not the model's.
IGNORED = frozenset({"_SOURCE", "_SINK"})
BOOKKEEPING_OPS = frozenset({"VarHandleOp", "ReadVariableOp", "Identity", "Const", "NoOp", "_Arg", "_Retval"})


@dataclass
class Breakdown:
    ops: pd.DataFrame  # op, nodes, mean_ms, std_ms, share_pct
    layers: pd.DataFrame  # layer, block, params, nodes, mean_ms, std_ms, share_pct
    blocks: pd.DataFrame  # block, layers, params, mean_ms, std_ms, share_pct
    nodes: pd.DataFrame  # node, op, layer, mean_ms, std_ms, share_pct
    total_ms: float  # mean sum of node times per run
    wall_untraced_ms: float
    wall_traced_ms: float
    overhead_pct: float
    iterations: int
    warmup: int


def _grouped(times_ms: np.ndarray, keys: list[str], total: float, name: str) -> pd.DataFrame:
    """Per key: the per-run sum of its columns, then mean, std (ddof 1) and share of the mean total."""
    order = list(dict.fromkeys(keys))
    columns = {key: [] for key in order}
    for index, key in enumerate(keys):
        columns[key].append(index)
    rows = []
    for key in order:
        per_run = times_ms[:, columns[key]].sum(axis=1)
        rows.append(
            {
                name: key,
                "nodes": len(columns[key]),
                "mean_ms": float(per_run.mean()),
                "std_ms": float(per_run.std(ddof=1)) if len(per_run) > 1 else 0.0,
                "share_pct": 100.0 * float(per_run.mean()) / total if total else 0.0,
            }
        )
    return pd.DataFrame(rows).sort_values("mean_ms", ascending=False, kind="stable").reset_index(drop=True)


def breakdown(trace: Trace, params: Mapping[str, int], block_pattern: str | None = None) -> Breakdown:
    keep = [index for index, name in enumerate(trace.names) if name not in IGNORED]
    names = [trace.names[index] for index in keep]
    ops = [trace.ops[index] for index in keep]
    times_ms = trace.times_us[:, keep] / 1000.0
    total = float(times_ms.sum(axis=1).mean()) if len(times_ms) else 0.0
    mapping: LayerMap = layer_map(names, params)
    layer_of = [mapping.layer_of(name) for name in names]
    # Layers in the order they ran, so a block is a run of consecutive layers: the median
    # start of a layer's compute nodes (its variable reads all start with the run).
    starts: dict[str, list[float]] = {}
    for name, op, layer in zip(names, ops, layer_of, strict=True):
        if op not in BOOKKEEPING_OPS:
            starts.setdefault(layer, []).append(trace.first_start.get(name, 0.0))
    for layer in layer_of:
        starts.setdefault(layer, [0.0])
    ordered = sorted(starts, key=lambda layer: float(np.median(starts[layer])))
    block_of = blocks(ordered, block_pattern) if block_pattern else blocks(ordered)
    op_table = _grouped(times_ms, ops, total, "op")
    layer_table = _grouped(times_ms, layer_of, total, "layer")
    layer_table.insert(1, "block", [block_of[layer] for layer in layer_table["layer"]])
    layer_table.insert(2, "params", [int(params.get(layer, 0)) for layer in layer_table["layer"]])
    block_table = _grouped(times_ms, [block_of[layer] for layer in layer_of], total, "block")
    layers_per_block: dict[str, set] = {}
    for layer in ordered:
        layers_per_block.setdefault(block_of[layer], set()).add(layer)
    block_table.insert(1, "layers", [len(layers_per_block[block]) for block in block_table["block"]])
    block_table.insert(
        2, "params", [sum(int(params.get(layer, 0)) for layer in layers_per_block[b]) for b in block_table["block"]]
    )
    node_table = pd.DataFrame(
        {
            "node": names,
            "op": ops,
            "layer": layer_of,
            "mean_ms": times_ms.mean(axis=0),
            "std_ms": times_ms.std(axis=0, ddof=1) if len(times_ms) > 1 else np.zeros(len(names)),
        }
    )
    node_table["share_pct"] = 100.0 * node_table["mean_ms"] / total if total else 0.0
    node_table = node_table.sort_values("mean_ms", ascending=False, kind="stable").reset_index(drop=True)
    return Breakdown(
        op_table,
        layer_table,
        block_table,
        node_table,
        total,
        float(np.mean(trace.untraced_ms)),
        float(np.mean(trace.traced_ms)),
        trace.overhead_pct,
        len(trace.traced_ms),
        trace.warmup,
    )


def _table(frame: pd.DataFrame, top: int) -> str:
    from serveprof.report.markdown import markdown_table
    from serveprof.report.numbers import significant

    shown = frame.head(top)
    header = list(shown.columns)
    rows = []
    for _, row in shown.iterrows():
        rows.append([significant(value) if isinstance(value, float) else str(value) for value in row])
    numeric = [pd.api.types.is_numeric_dtype(shown[column]) for column in header]
    return markdown_table(header, rows, numeric)


def markdown(result: Breakdown, title: str, top: int = 20) -> str:
    from serveprof.report.numbers import significant

    lines = [
        f"# Where the time goes: {title}\n",
        f"{result.iterations} traced runs after {result.warmup} warm-up runs, each traced run beside an untraced one.",
        f"Wall time per run: {significant(result.wall_untraced_ms)} ms untraced, "
        f"{significant(result.wall_traced_ms)} ms traced: tracing costs {significant(result.overhead_pct)} %.",
        f"Node times sum to {significant(result.total_ms)} ms per run; shares are of that sum (nodes run side by "
        "side, so it can exceed the wall time).\n",
        f"## Top {top} ops\n",
        _table(result.ops, top),
        f"## Top {top} layers\n",
        _table(result.layers, top),
        f"## Top {top} blocks\n",
        _table(result.blocks, top),
    ]
    return "\n".join(lines)

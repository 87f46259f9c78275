"""Per-node times of a served model over many runs, with the cost of tracing them measured alongside.

The model is loaded by the embedded server's own loader (``load_servable``: the Session
loader, the server's ConfigProto) and each run is a Session callable on the signature's
tensor names, the call every request makes. Traced runs use a second callable whose
RunOptions ask for ``FULL_TRACE``; TensorFlow then returns the step stats: for every
node executed, its start and duration (``all_end_rel_micros``), and the kernel that ran
(after graph rewrites such as oneDNN's ``_MklNativeConv2D``). Untraced and traced runs
alternate, so the tracing overhead is their ratio on the same machine in the same
minutes, not a number from elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

NS_PER_MS = 1_000_000


@dataclass
class Trace:
    """``times_us[i, j]``: node ``names[j]``'s time in traced run ``i``; ``ops[j]`` the kernel that ran it."""

    names: list[str]
    ops: list[str]
    devices: list[str]
    times_us: np.ndarray
    traced_ms: list[float]
    untraced_ms: list[float]
    warmup: int
    first_start: dict[str, float] = field(default_factory=dict)  # node -> mean start (µs from the run's start)

    @property
    def overhead_pct(self) -> float:
        return 100.0 * (float(np.mean(self.traced_ms)) / float(np.mean(self.untraced_ms)) - 1.0)


def op_type(timeline_label: str, fallback: str) -> str:
    """The kernel of a step-stats node from its timeline label, ``name = OpType(inputs)``."""
    _, separator, rest = timeline_label.partition(" = ")
    return rest.split("(", 1)[0].strip() if separator else fallback


def _device_stats(step_stats):
    """The per-device node stats to count: a GPU's ``stream:all`` stands for its streams and launches."""
    devices = list(step_stats.dev_stats)
    on_stream = {node.node_name for dev in devices if dev.device.endswith("stream:all") for node in dev.node_stats}
    for dev in devices:
        if "/stream:" in dev.device and not dev.device.endswith("stream:all"):
            continue
        for node in dev.node_stats:
            if node.node_name in on_stream and not dev.device.endswith("stream:all"):
                continue
            yield dev.device, node


def trace_runs(
    run: Callable[[], object],
    traced: Callable[[object], object],
    *,
    warmup: int,
    iterations: int,
    log: Callable[[str], None] = lambda _line: None,
) -> Trace:
    """``warmup`` untraced runs, then ``iterations`` pairs of (untraced, traced) runs.

    ``run()`` makes one untraced run; ``traced(run_metadata)`` one traced run filling
    ``run_metadata`` (a RunMetadata proto).
    """
    from tensorflow.core.protobuf import config_pb2

    for _ in range(warmup):
        run()
    index: dict[str, int] = {}
    names: list[str] = []
    ops: list[str] = []
    devices: list[str] = []
    rows: list[dict[int, float]] = []
    starts: dict[str, list[float]] = {}
    traced_ms, untraced_ms = [], []
    last_log = time.monotonic()
    for iteration in range(iterations):
        started = time.perf_counter_ns()
        run()
        untraced_ms.append((time.perf_counter_ns() - started) / NS_PER_MS)
        metadata = config_pb2.RunMetadata()
        started = time.perf_counter_ns()
        traced(metadata)
        traced_ms.append((time.perf_counter_ns() - started) / NS_PER_MS)
        row: dict[int, float] = {}
        origin = None
        for _device, node in _device_stats(metadata.step_stats):
            origin = node.all_start_micros if origin is None else min(origin, node.all_start_micros)
        for device, node in _device_stats(metadata.step_stats):
            column = index.get(node.node_name)
            if column is None:
                column = index[node.node_name] = len(names)
                names.append(node.node_name)
                ops.append(op_type(node.timeline_label, "?"))
                devices.append(device)
            row[column] = row.get(column, 0.0) + node.all_end_rel_micros
            starts.setdefault(node.node_name, []).append(node.all_start_micros - (origin or 0))
        rows.append(row)
        if time.monotonic() - last_log > 5.0:
            last_log = time.monotonic()
            log(f"traced {iteration + 1}/{iterations} runs")
    times = np.zeros((len(rows), len(names)))
    for row_index, row in enumerate(rows):
        for column, value in row.items():
            times[row_index, column] = value
    return Trace(
        names,
        ops,
        devices,
        times,
        traced_ms,
        untraced_ms,
        warmup,
        {name: float(np.mean(values)) for name, values in starts.items()},
    )


def session_callables(servable, signature_name: str, feeds: Mapping[str, np.ndarray]):
    """(untraced run, traced run) for one signature of a loaded SavedModel servable, on ``feeds`` by alias."""
    from tensorflow.core.protobuf import config_pb2

    runner = servable.signatures[signature_name]
    names = sorted(runner.input_names[alias] for alias in feeds)
    arrays_by_name = {runner.input_names[alias]: array for alias, array in feeds.items()}
    arrays = [arrays_by_name[name] for name in names]
    fetches = [runner.output_names[alias] for alias in sorted(runner.output_names)]
    session = servable.bundle.session
    plain = session._make_callable_from_options(config_pb2.CallableOptions(feed=names, fetch=fetches))  # noqa: SLF001
    options = config_pb2.CallableOptions(feed=names, fetch=fetches)
    options.run_options.trace_level = config_pb2.RunOptions.FULL_TRACE
    traced = session._make_callable_from_options(options)  # noqa: SLF001

    def run():
        return plain(*arrays)

    def run_traced(metadata):
        return traced(*arrays, run_metadata=metadata)

    return run, run_traced

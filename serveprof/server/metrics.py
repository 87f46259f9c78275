"""TF Serving's metrics, kept where tensorflow_model_server keeps them, and its Prometheus page.

The names, labels and buckets are those TF Serving and TensorFlow register
(servables/tensorflow/util.cc, saved_model_warmup_util.cc, batching/batching_session.cc,
batching_util.h, tensorflow/cc/saved_model/loader.cc), and the page is written line for
line as util/prometheus_exporter.cc writes it: ``/tensorflow/serving/request_count``
becomes ``:tensorflow:serving:request_count``, no HELP lines, counters without a
``_total`` suffix, histograms as cumulative ``_bucket{le=...}``, ``_sum`` and ``_count``.

Why not prometheus_client: it appends ``_total`` to every counter's name and writes
bucket bounds its own way (``le="10.0"``), so a scraper written for TF Serving's names
would not find ``:tensorflow:serving:request_count`` here. It is used on the other end,
to parse what a server exposes (serveprof/client/server_metrics.py).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any

DBL_MAX = 1.7976931348623157e308


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """monitoring::Buckets::Exponential: ``count`` limits from ``scale``, then DBL_MAX for the rest."""
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return (*limits, DBL_MAX)


LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)  # microseconds, up to about 20 minutes
QUEUING_BUCKETS = exponential_buckets(100, 1.2, 52)
SIZE_BUCKETS = exponential_buckets(1, 2, 14)
EXAMPLE_BUCKETS = exponential_buckets(1, 2, 15)


def _number(value: float) -> str:
    """absl::StrCat of a double: six significant digits."""
    return f"{value:.6g}"


@dataclass
class _Family:
    name: str  # TensorFlow's, e.g. /tensorflow/serving/request_count
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None  # None: a counter
    cells: dict[tuple, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, labels: tuple, value: float) -> None:
        if self.buckets is None:
            with self.lock:
                self.cells[labels] = self.cells.get(labels, 0) + int(value)
            return
        index = bisect.bisect_right(self.buckets, value)  # a bucket holds values below its limit
        with self.lock:
            cell = self.cells.get(labels)
            if cell is None:
                cell = self.cells[labels] = [[0] * len(self.buckets), 0.0]
            cell[0][index] += 1
            cell[1] += value

    def lines(self) -> list[str]:
        prometheus = ":" + self.name.lstrip("/").replace("/", ":")
        prometheus = "".join(c if c.isalnum() or c in "_:" else ":" for c in prometheus)
        kind = "counter" if self.buckets is None else "histogram"
        out = [f"# TYPE {prometheus} {kind}"]
        with self.lock:
            cells = sorted(self.cells.items())
        for labels, cell in cells:
            pairs = [
                f'{_label_name(name)}="{_label_value(value)}"' for name, value in zip(self.labels, labels, strict=True)
            ]
            if self.buckets is None:
                out.append(f"{prometheus}{{{','.join(pairs)}}} {cell}")
                continue
            counts, total = cell
            prefix = f"{prometheus}_bucket{{{','.join(pairs)}{',' if pairs else ''}"
            cumulative = 0
            for index, count in enumerate(counts):
                cumulative += count
                bound = _number(self.buckets[index]) if index < len(counts) - 1 else "+Inf"
                out.append(f'{prefix}le="{bound}"}} {cumulative}')
            out.append(f"{prometheus}_sum{{{','.join(pairs)}}} {_number(total)}")
            out.append(f"{prometheus}_count{{{','.join(pairs)}}} {cumulative}")
        return out


def _label_name(name: str) -> str:
    cleaned = "".join(c if c.isascii() and c.isalnum() else "_" for c in name)
    return "_" + cleaned if cleaned[:1].isdigit() else cleaned


def _label_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


class Metrics:
    """Every metric this server records; ``prometheus_text()`` is the page TF Serving's exporter writes."""

    def __init__(self):
        families = [
            _Family("/tensorflow/serving/request_count", ("model_name", "status")),
            _Family("/tensorflow/serving/request_latency", ("model_name", "API", "entrypoint"), LATENCY_BUCKETS),
            _Family("/tensorflow/serving/runtime_latency", ("model_name", "API", "runtime"), LATENCY_BUCKETS),
            _Family("/tensorflow/serving/request_example_counts", ("model",), EXAMPLE_BUCKETS),
            _Family("/tensorflow/serving/request_example_count_total", ("model",)),
            _Family("/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status")),
            _Family("/tensorflow/cc/saved_model/load_latency", ("model_path",)),
            _Family("/tensorflow/serving/model_warmup_latency", ("model_path", "status"), LATENCY_BUCKETS),
            _Family("/tensorflow/serving/model_warmup_records_read", ("model_path", "status")),
            _Family("/tensorflow/serving/batching_session/queuing_latency", ("thread_pool_name",), QUEUING_BUCKETS),
            _Family("/tensorflow/serving/batching_session/wrapped_run_count", ()),
            _Family("/tensorflow/serving/batching_session/input_batch_size", (), SIZE_BUCKETS),
            _Family("/tensorflow/serving/batching_session/processed_batch_size", (), SIZE_BUCKETS),
            _Family("/tensorflow/serving/batching_session/padding_size", ("execution_batch_size",), SIZE_BUCKETS),
        ]
        self._families = {
            family.name.rsplit("/", 1)[1]
            if "batching" not in family.name
            else "batching_" + family.name.rsplit("/", 1)[1]: family
            for family in families
        }
        # The three every request touches, without the lookup by name.
        self._count = self._families["request_count"]
        self._latency = self._families["request_latency"]
        self._runtime = self._families["runtime_latency"]

    def _add(self, key: str, labels: tuple, value: float) -> None:
        self._families[key].add(labels, value)

    # Requests, as prediction_service_impl.cc and http_server.cc record them.
    def request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """One request: its count by status, and its latency if it succeeded."""
        if status == "OK":
            self._latency.add((model, api, entrypoint), seconds * 1e6)
        self._count.add((model, status), 1)

    def runtime(self, model: str, api: str, seconds: float) -> None:
        self._runtime.add((model, api, "TF1"), seconds * 1e6)

    def examples(self, model: str, count: int) -> None:
        self._add("request_example_counts", (model,), count)
        self._add("request_example_count_total", (model,), count)

    # Loading and warm-up.
    def load(self, model_path: str, seconds: float, ok: bool) -> None:
        self._add("load_attempt_count", (model_path, "success" if ok else "fail"), 1)
        self._add("load_latency", (model_path,), seconds * 1e6)

    def warmup(self, model_path: str, status: str, seconds: float, records: int) -> None:
        self._add("model_warmup_latency", (model_path, status), seconds * 1e6)
        self._add("model_warmup_records_read", (model_path, status), records)

    # Batching (the BatchingSession calls these).
    def batch_input_size(self, size: int) -> None:
        self._add("batching_input_batch_size", (), size)

    def batch_queuing(self, thread_pool: str, seconds: float) -> None:
        self._add("batching_queuing_latency", (thread_pool,), seconds * 1e6)

    def batch_processed(self, size: int, padding: int) -> None:
        self._add("batching_processed_batch_size", (), size)
        self._add("batching_padding_size", (str(size),), padding)

    def batch_run(self) -> None:
        self._add("batching_wrapped_run_count", (), 1)

    def prometheus_text(self) -> str:
        lines: list[str] = []
        for family in sorted(self._families.values(), key=lambda family: family.name):
            lines.extend(family.lines())
        return "\n".join(lines) + "\n"

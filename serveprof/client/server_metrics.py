"""What the server itself measured: TF Serving's Prometheus page, scraped and read.

Works against any server that exposes TF Serving's metrics (tensorflow_model_server
with ``--monitoring_config_file``, in a container or not, and ``serveprof serve``):

- ``scrape(url)`` fetches the page; ``parse(text)`` reads it with prometheus_client's
  parser into a ``Snapshot``;
- ``server_latency(before, after, model, api)`` is the latency the server recorded for
  the requests made between two snapshots (``:tensorflow:serving:request_latency``,
  from the request's arrival to its answer, inside the server), as count, mean and
  percentiles, so a measurement can put the server's share beside the client's;
- ``startup_times(snapshot)`` splits a cold start into the SavedModel load
  (``:tensorflow:cc:saved_model:load_latency``) and the warm-up replay
  (``:tensorflow:serving:model_warmup_latency``).

TF Serving's latency histograms have buckets growing by a factor of 1.8, so percentiles
are interpolated within a bucket as Prometheus' ``histogram_quantile`` does: the true
value lies in the same bucket, up to 1.8 times apart. The mean (sum / count) is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
DEFAULT_PATH = "/monitoring/prometheus/metrics"  # TF Serving's, when the MonitoringConfig names none


@dataclass
class Snapshot:
    """Every sample of one scrape: ``{metric family name: [(sample name, labels, value)]}``."""

    families: dict[str, list[tuple[str, dict, float]]] = field(default_factory=dict)

    def samples(self, family: str, suffix: str = "", **labels: str) -> list[tuple[dict, float]]:
        wanted = {family + suffix, family + suffix + "_total"} if not suffix else {family + suffix}
        return [
            (sample_labels, value)
            for name, sample_labels, value in self.families.get(family, [])
            if name in wanted and all(sample_labels.get(key) == value_ for key, value_ in labels.items())
        ]


def scrape(url: str, timeout_s: float = 10.0) -> str:
    """The Prometheus page at ``url`` (e.g. http://127.0.0.1:8501/monitoring/prometheus/metrics)."""
    import requests

    answer = requests.get(url, timeout=timeout_s)
    answer.raise_for_status()
    return answer.text


def parse(text: str) -> Snapshot:
    from prometheus_client.parser import text_string_to_metric_families

    snapshot = Snapshot()
    for family in text_string_to_metric_families(text):
        snapshot.families.setdefault(family.name, []).extend(
            (sample.name, dict(sample.labels), float(sample.value)) for sample in family.samples
        )
    return snapshot


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (``inf`` last), sum and count, in the metric's unit."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    total: float
    count: float

    def minus(self, earlier: Histogram | None) -> Histogram:
        if earlier is None:
            return self
        return Histogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True)),
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float:
        """histogram_quantile: linear within the bucket holding the q-th value; NaN if empty."""
        if not self.count:
            return math.nan
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower_bound  # Prometheus answers the highest finite bound
                if cumulative == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cumulative - lower_count)
            lower_bound, lower_count = bound, cumulative
        return lower_bound


def histogram(snapshot: Snapshot, family: str, **labels: str) -> Histogram | None:
    """The histogram ``family`` with exactly these labels (besides ``le``), or None if the server has none yet."""
    buckets = sorted(
        (float(sample_labels["le"]), value)
        for sample_labels, value in snapshot.samples(family, "_bucket")
        if {key: item for key, item in sample_labels.items() if key != "le"} == labels
    )
    if not buckets:
        return None
    total = sum(value for _, value in snapshot.samples(family, "_sum", **labels))
    count = sum(value for _, value in snapshot.samples(family, "_count", **labels))
    return Histogram(tuple(bound for bound, _ in buckets), tuple(value for _, value in buckets), total, count)


@dataclass(frozen=True)
class ServerLatency:
    """The server's own view of the requests between two scrapes, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float


def server_latency(
    before: Snapshot | None,
    after: Snapshot,
    model: str,
    api: str = "Predict",
    entrypoint: str = "GRPC",
    family: str = REQUEST_LATENCY,
) -> ServerLatency | None:
    """Latency TF Serving recorded (microseconds) for ``api`` requests via ``entrypoint`` between the scrapes.

    ``api`` is "Predict", "Classify" or "Regress" for gRPC, the URL's verb ("predict", ...)
    for REST; ``entrypoint`` "GRPC" or "REST". ``family`` RUNTIME_LATENCY (labels
    model_name, API, runtime="TF1") gives the Session run alone. None if the server
    recorded none (no such requests, or no metrics enabled).
    """
    labels = {"model_name": model, "API": api}
    labels.update({"runtime": "TF1"} if family == RUNTIME_LATENCY else {"entrypoint": entrypoint})
    latest = histogram(after, family, **labels)
    if latest is None:
        return None
    window = latest.minus(histogram(before, family, **labels) if before is not None else None)
    if window.count <= 0:
        return None
    return ServerLatency(
        count=int(window.count),
        mean_ms=window.total / window.count / 1e3,
        p50_ms=window.quantile(0.5) / 1e3,
        p99_ms=window.quantile(0.99) / 1e3,
    )


@dataclass(frozen=True)
class StartupTimes:
    """A model's cold start as the server reports it: the SavedModel load, and the warm-up replay (None: none ran)."""

    load_s: float | None
    warmup_s: float | None
    warmup_records: int | None


def startup_times(snapshot: Snapshot, model_path: str | None = None) -> StartupTimes:
    """From ``load_latency`` (a counter of microseconds) and ``model_warmup_latency`` (a histogram)."""

    def chosen(samples):
        return [value for labels, value in samples if model_path is None or labels.get("model_path") == model_path]

    loads = chosen(snapshot.samples(LOAD_LATENCY))
    warmups = chosen(snapshot.samples(WARMUP_LATENCY, "_sum"))
    records = chosen(snapshot.samples(":tensorflow:serving:model_warmup_records_read"))
    return StartupTimes(
        load_s=sum(loads) / 1e6 if loads else None,
        warmup_s=sum(warmups) / 1e6 if warmups else None,
        warmup_records=int(sum(records)) if records else None,
    )

"""What the server itself saw during a point's summary windows, from two scrapes of its Prometheus page.

TF Serving's own request latency (``:tensorflow:serving:request_latency``, from a
request's arrival to its answer inside the server) and Session-run latency, and, with
batching, how many batches ran, their mean size as executed (padding included), the
padding, and how long tasks queued (``:tensorflow:serving:batching_session:*``).
Histograms are read with serveprof.client.server_metrics; a family the server does not
expose gives null figures.
"""

from __future__ import annotations

from serveprof.client.server_metrics import RUNTIME_LATENCY, Histogram, Snapshot, parse, server_latency

BATCHING = ":tensorflow:serving:batching_session:"


def merged(snapshot: Snapshot | None, family: str) -> Histogram | None:
    """``family``'s histogram summed over all its label sets (None: the server has none)."""
    if snapshot is None:
        return None
    buckets: dict[float, float] = {}
    for labels, value in snapshot.samples(family, "_bucket"):
        bound = float(labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    if not buckets:
        return None
    bounds = tuple(sorted(buckets))
    total = sum(value for _, value in snapshot.samples(family, "_sum"))
    count = sum(value for _, value in snapshot.samples(family, "_count"))
    return Histogram(bounds, tuple(buckets[bound] for bound in bounds), total, count)


def _window(before: Snapshot, after: Snapshot, family: str) -> Histogram | None:
    latest = merged(after, family)
    if latest is None:
        return None
    earlier = merged(before, family)
    if earlier is not None and earlier.bounds != latest.bounds:
        earlier = None
    return latest.minus(earlier)


def _latency(latency) -> dict | None:
    if latency is None:
        return None
    return {"count": latency.count, "mean_ms": latency.mean_ms, "p50_ms": latency.p50_ms, "p99_ms": latency.p99_ms}


def server_figures(before_text: str | None, after_text: str | None, model: str, protocol: str) -> dict | None:
    """The server's figures between two scrapes (None when the server serves no metrics page)."""
    if before_text is None or after_text is None:
        return None
    before, after = parse(before_text), parse(after_text)
    api, entrypoint = ("Predict", "GRPC") if protocol == "grpc" else ("predict", "REST")
    figures = {
        "request_latency": _latency(server_latency(before, after, model, api, entrypoint)),
        "runtime_latency": _latency(server_latency(before, after, model, api, family=RUNTIME_LATENCY)),
        "batching": None,
    }
    processed = _window(before, after, BATCHING + "processed_batch_size")
    if processed is not None and processed.count > 0:
        padding = _window(before, after, BATCHING + "padding_size")
        queuing = _window(before, after, BATCHING + "queuing_latency")
        figures["batching"] = {
            "batches": int(processed.count),
            "mean_batch_size": processed.total / processed.count,
            "padding_rows": padding.total if padding is not None else None,
            "queuing_p50_ms": queuing.quantile(0.5) / 1e3 if queuing is not None and queuing.count else None,
            "queuing_p99_ms": queuing.quantile(0.99) / 1e3 if queuing is not None and queuing.count else None,
        }
    return figures

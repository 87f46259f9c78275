"""What the server itself measured, beside the client's numbers: request latency and start-up times.

``ServerLatencyWindow`` scrapes TF Serving's Prometheus page (serveprof/client/server_metrics.py)
just before and just after the timed requests, never between them, and turns the two
snapshots into the server's own latency for exactly those requests: from a request's
arrival in the server to its answer, so client latency minus server latency is what
the client and the transport (loopback, framing, serialisation on the client's side)
added. ``startup(...)`` splits a cold start into the SavedModel load and the warm-up
replay, from the same page or, without it, from the embedded server's log line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from serveprof.client import server_metrics

# The labels TF Serving's request_latency carries per protocol (API, entrypoint).
API_LABELS = {"grpc": ("Predict", "GRPC"), "rest": ("predict", "REST")}
STARTUP_LINE = re.compile(r"startup timings: load_s=([0-9.]+) warmup_s=([0-9.]+) warmup_records=(\d+)")


def scrape(url: str | None) -> tuple[server_metrics.Snapshot | None, str | None]:
    """(snapshot, None), or (None, why there is none)."""
    if url is None:
        return (
            None,
            "the server serves no metrics page (server.monitoring is off, or an external server without --metrics-url)",
        )
    try:
        return server_metrics.parse(server_metrics.scrape(url)), None
    except Exception as error:  # noqa: BLE001 - a missing page must not fail the measurement
        return None, f"reading {url} failed: {error}"


class ServerLatencyWindow:
    """``window.open()`` before the timed requests, ``window.close()`` after: the stats JSON's ``server_latency``."""

    def __init__(self, url: str | None, model: str, protocol: str):
        self.url, self.model = url, model
        self.api, self.entrypoint = API_LABELS[protocol]
        self.before: server_metrics.Snapshot | None = None
        self.reason: str | None = None

    def open(self) -> None:
        self.before, self.reason = scrape(self.url)

    def close(self) -> dict:
        record = {"count": None, "mean_ms": None, "p50_ms": None, "p99_ms": None,
                  "api": self.api, "entrypoint": self.entrypoint, "reason": self.reason}  # fmt: skip
        if self.before is None:
            return record
        after, reason = scrape(self.url)
        if after is None:
            return {**record, "reason": reason}
        latency = server_metrics.server_latency(self.before, after, self.model, self.api, self.entrypoint)
        if latency is None:
            return {**record, "reason": f"the server recorded no {self.api} requests via {self.entrypoint}"}
        return {**record, "count": latency.count, "mean_ms": latency.mean_ms, "p50_ms": latency.p50_ms,
                "p99_ms": latency.p99_ms}  # fmt: skip


def startup(url: str | None, log_tail: Callable[[int], str]) -> dict:
    """``server_load_ms`` (the SavedModel load), ``warmup_ms`` and ``warmup_records`` of a fresh server.

    From the metrics page where there is one (any backend), else from the embedded
    server's ``startup timings:`` log line; None where neither says.
    """
    snapshot, _ = scrape(url)
    if snapshot is not None:
        times = server_metrics.startup_times(snapshot)
        if times.load_s is not None:
            return {
                "server_load_ms": times.load_s * 1000,
                # No warm-up metric: none ran (no records, or --enable_model_warmup=false).
                "warmup_ms": (times.warmup_s or 0.0) * 1000,
                "warmup_records": times.warmup_records or 0,
            }
    found = STARTUP_LINE.findall(log_tail(2000))
    if found:
        load_s, warmup_s, records = found[-1]
        return {"server_load_ms": float(load_s) * 1000, "warmup_ms": float(warmup_s) * 1000,
                "warmup_records": int(records)}  # fmt: skip
    return {"server_load_ms": None, "warmup_ms": None, "warmup_records": None}

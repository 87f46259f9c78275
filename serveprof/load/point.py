"""One load point against a server: warm-up, windows until stable, and everything measured beside them.

1. The request is built once from the served signature (the same inputs as the
   per-batch procedure), and every generator connection sends it once, unrecorded.
2. The load runs for ``warmup_s`` unrecorded, then in windows (serveprof.load.windows)
   until the last ``stable_windows`` agree within ``stability_pct`` or ``max_windows`` ran.
3. Beside the windows: the server's CPU and memory (``ResourceSampler``, one per
   window), the machine's disturbance (``DisturbanceSampler``, the generator's processes
   counted as ours), and, where the server serves TF Serving's Prometheus page, a scrape
   at every window's end, so the server's own request latency and batching figures
   cover the same windows as the client's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serveprof.errors import ServeprofError
from serveprof.load.generator import LoadGenerator
from serveprof.load.scenarios import LoadPoint, PointSettings, describe_batching, processes_for
from serveprof.load.server_figures import server_figures
from serveprof.load.windows import DONE, DUE, SENT, STATUS, TAKEN, Window, cut, point_stats, stable
from serveprof.load.worker import WorkerPlan
from serveprof.measure.inputs import AUTO, InputSettings
from serveprof.measure.resources import ResourceSampler
from serveprof.measure.retry import DisturbanceSettings
from serveprof.measure.session import Endpoint

START_DELAY_S = 0.2  # from the go to the first request: every worker has the message by then
SLICE_S = 0.1  # how often workers hand over their answers
LATE_ROWS_S = 0.05  # a row answered just before a hand-over may come with the next one


@dataclass
class PointResult:
    rows: np.ndarray  # every request answered in the measured windows, RECORD_FIELDS plus the window
    windows: list[Window]
    statuses: list[str]
    start_ns: int  # the first window's start: the CSV's times count from here
    document: dict


def worker_plans(
    endpoint: Endpoint, point: LoadPoint, settings: PointSettings, request: bytes, protocol: str, transport: str
) -> list[WorkerPlan]:
    """The generator's processes and connections for ``point``: N clients, or ``max_in_flight`` open-loop connections."""
    connections = point.concurrency if point.mode == "closed" else settings.max_in_flight
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = processes_for(connections, settings.processes, cpus)
    shares = [connections // processes + (1 if index < connections % processes else 0) for index in range(processes)]
    return [
        WorkerPlan(
            protocol=protocol,
            transport=transport,
            address=endpoint.address,
            model=endpoint.client.model_name,
            request=request,
            connections=share,
            mode=point.mode,
            rate_per_s=point.rate_per_s,
            arrival=settings.arrival,
            seed=settings.seed,
            worker=index,
            workers=processes,
            slice_s=SLICE_S,
        )
        for index, share in enumerate(shares)
    ]


class _Samplers:
    """A ResourceSampler per window, and scrapes of the server's metrics at each window's end."""

    def __init__(self, endpoint: Endpoint, interval_s: float):
        self.endpoint, self.interval_s = endpoint, interval_s
        self.resources: list[dict] = []
        self.pages: list[str | None] = []
        self._sampler: ResourceSampler | None = None

    def _scrape(self) -> str | None:
        if not self.endpoint.metrics_url:
            return None
        from serveprof.client.server_metrics import scrape

        try:
            return scrape(self.endpoint.metrics_url)
        except Exception:  # noqa: BLE001 - the figures are optional; their absence is recorded as null
            return None

    def start(self) -> None:
        self.pages.append(self._scrape())
        self._sampler = ResourceSampler(self.endpoint.pid, self.interval_s).__enter__()

    def window_ended(self) -> None:
        self._sampler.__exit__(None, None, None)
        self.resources.append(self._sampler.summary())
        self.pages.append(self._scrape())
        self._sampler = ResourceSampler(self.endpoint.pid, self.interval_s).__enter__()

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.__exit__(None, None, None)
            self._sampler = None


def _resources(summaries: list[dict]) -> dict:
    """Several windows' resource summaries as one: CPU and mean RSS weighted by samples, the peak of peaks."""

    def weighted(key: str) -> float | None:
        pairs = [(summary[key], summary["samples"]) for summary in summaries if summary.get(key) is not None]
        total = sum(samples for _, samples in pairs)
        return sum(value * samples for value, samples in pairs) / total if total else None

    peaks = [summary["rss_peak_mb"] for summary in summaries if summary.get("rss_peak_mb") is not None]
    return {
        "cpu_util_pct": weighted("cpu_util_pct"),
        "rss_peak_mb": max(peaks) if peaks else None,
        "rss_mean_mb": weighted("rss_mean_mb"),
        "samples": sum(summary["samples"] for summary in summaries),
    }


def schedule_figures(table: np.ndarray, first: Window, last: Window, point: LoadPoint, settings: PointSettings) -> dict:
    """Whether the open loop kept its schedule over the summary windows, and the rate it achieved."""
    seconds = (last.end_ns - first.start_ns) / 1e9
    sent = table[(table[:, SENT] >= first.start_ns) & (table[:, SENT] < last.end_ns)]
    tolerance_ns = settings.schedule_tolerance_ms * 1e6
    lag = sent[:, SENT] - sent[:, DUE]
    late = (sent[:, TAKEN] <= sent[:, DUE]) & (lag > tolerance_ns)  # waited on the generator itself
    queued = sent[:, TAKEN] > sent[:, DUE]  # waited for a free connection: the server was behind
    count = len(sent)
    figures = {
        "target_rate_per_s": point.rate_per_s,
        "achieved_rate_per_s": count / seconds if seconds > 0 else None,
        "sent": count,
        "tolerance_ms": settings.schedule_tolerance_ms,
        "late": int(late.sum()),
        "late_pct": float(100.0 * late.sum() / count) if count else None,
        "queued": int(queued.sum()),
        "queued_pct": float(100.0 * queued.sum() / count) if count else None,
        "lag_p50_ms": float(np.percentile(lag, 50)) / 1e6 if count else None,
        "lag_p99_ms": float(np.percentile(lag, 99)) / 1e6 if count else None,
    }
    # The generator kept its schedule when at most 1 % of the sends it was free to make on time were late.
    figures["kept"] = bool(count) and bool(figures["late_pct"] <= 1.0)
    return figures


def measure_point(
    endpoint: Endpoint,
    point: LoadPoint,
    settings: PointSettings,
    inputs: InputSettings,
    protocol: str,
    transport: str,
    log: Callable[[str], None],
    model_type: str = AUTO,
    disturbance: DisturbanceSettings | None = None,
) -> PointResult:
    """``point`` against ``endpoint``: the requests of the measured windows and the point's document.

    ``disturbance`` holds the ``measure:`` limits a point counts as disturbed beyond, as a series does.
    """
    batch = settings.batch_size
    input_settings, resolution = endpoint.resolve_input(batch, inputs, model_type)
    request, description = endpoint.prepare_request(batch, input_settings)
    description.update(resolution)
    plans = worker_plans(endpoint, point, settings, request, protocol, transport)
    rule = settings.rule
    load = f"{point.concurrency} clients" if point.mode == "closed" else f"{point.rate_per_s:g} requests/s"
    log(
        f"{point.scenario}/{point.point}: {load} at batch {batch} ({describe_batching(point.batching)}); "
        f"{len(plans)} generator process(es), {sum(plan.connections for plan in plans)} connection(s)"
    )
    samplers = _Samplers(endpoint, settings.resource_interval_s)
    windows: list[Window] = []
    with LoadGenerator(plans) as generator:
        begin_ns = time.monotonic_ns() + int(START_DELAY_S * 1e9)
        start_ns = begin_ns + int(settings.warmup_s * 1e9)
        generator.begin(begin_ns)
        while generator.answers.covered() < start_ns:
            generator.receive(SLICE_S)
        own = [os.getpid(), *generator.pids]
        watch = (disturbance or DisturbanceSettings()).sampler(
            [endpoint.pid], processes=own, server_seen=endpoint.pid is not None
        )
        with watch as machine:
            samplers.start()
            try:
                settled = False
                while not settled and len(windows) < rule.max_windows:
                    generator.receive(SLICE_S)
                    ready = cut(
                        generator.answers.table(),
                        start_ns,
                        generator.answers.covered() - int(LATE_ROWS_S * 1e9),
                        rule,
                        len(windows),
                    )
                    for window in ready[: rule.max_windows - len(windows)]:
                        windows.append(window)
                        samplers.window_ended()
                        _log_window(log, point, window, batch)
                        if window.errors_only():
                            endpoint.check_alive()  # a dead server raises here, quoting its log
                        if stable(windows, rule):
                            settled = True
                            break
            finally:
                samplers.stop()
        generator.stop()
        table = generator.answers.table()
        statuses = generator.status_names()
        abandoned = generator.answers.abandoned
        examples = generator.answers.examples
        processes = len(plans)
        pids = list(generator.pids)
    # Windows again from every answer, now that the stragglers of each hand-over are in too.
    final = [Window(w.index, w.start_ns, w.end_ns, _between(table, w.start_ns, w.end_ns)) for w in windows]
    used = final[-rule.stable_windows :]
    if not used or not any(len(window.ok()) for window in used):
        raise ServeprofError(
            f"{point.scenario}/{point.point}: no request was answered OK in the measured windows "
            f"({_errors_text(final, statuses)}); first error: {next(iter(examples.values()), 'none')}",
            "read the server log; the model may refuse this batch size or input, or the server may have failed",
        )
    stats = point_stats(used, batch, statuses)
    measured = (
        np.concatenate([np.column_stack([window.rows, np.full(len(window.rows), window.index)]) for window in final])
        if final
        else np.empty((0, 7), np.int64)
    )
    first, last = used[0], used[-1]
    document = {
        "scenario": point.scenario,
        "point": point.point,
        "mode": point.mode,
        "concurrency": point.concurrency,
        "target_rate_per_s": point.rate_per_s,
        "arrival": settings.arrival if point.mode == "open" else None,
        "seed": settings.seed if point.mode == "open" and settings.arrival == "poisson" else None,
        "batch_size": batch,
        "batching": dict(point.batching) if point.batching is not None else None,
        "stable": settled,
        "windows_measured": len(final),
        "summary_windows": [first.index, last.index],
        "window_rule": {
            "window_s": rule.window_s,
            "window_requests": rule.window_requests,
            "stable_windows": rule.stable_windows,
            "max_windows": rule.max_windows,
            "stability_pct": rule.stability_pct,
            "warmup_s": settings.warmup_s,
        },
        "stats": stats,
        "schedule": schedule_figures(table, first, last, point, settings) if point.mode == "open" else None,
        "windows": [
            {**window.summary(batch), "start_s": (window.start_ns - start_ns) / 1e9, **_cpu(resources)}
            for window, resources in zip(final, samplers.resources, strict=False)
        ],
        "resources": _resources(samplers.resources[len(final) - len(used) :]),
        "server_metrics": server_figures(
            samplers.pages[len(final) - len(used)], samplers.pages[len(final)], endpoint.client.model_name, protocol
        )
        if len(samplers.pages) > len(final)
        else None,
        "disturbance": machine.summary(),
        "generator": {
            "processes": processes,
            "pids": pids,
            "connections": sum(plan.connections for plan in plans),
            "abandoned_at_stop": abandoned,
        },
        "error_examples": examples,
        "input": description,
    }
    _log_summary(log, point, document)
    return PointResult(measured, final, statuses, start_ns, document)


def _between(table: np.ndarray, low: int, high: int) -> np.ndarray:
    return table[(table[:, DONE] >= low) & (table[:, DONE] < high)]


def _cpu(resources: dict) -> dict:
    return {"cpu_util_pct": resources.get("cpu_util_pct"), "rss_peak_mb": resources.get("rss_peak_mb")}


def _errors_text(windows: list[Window], statuses: list[str]) -> str:
    rows = np.concatenate([window.rows for window in windows]) if windows else np.empty((0, 6), np.int64)
    failed = rows[rows[:, STATUS] != 0]
    if not len(rows):
        return "no answers at all"
    codes, counts = np.unique(failed[:, STATUS], return_counts=True)
    listed = ", ".join(f"{statuses[int(code)]} x{int(count)}" for code, count in zip(codes, counts, strict=True))
    return f"{len(rows)} answers, errors: {listed or 'none'}"


def _log_window(log: Callable[[str], None], point: LoadPoint, window: Window, batch: int) -> None:
    summary = window.summary(batch)
    p50 = f"{summary['p50_ms']:.3f} ms" if summary["p50_ms"] is not None else "n/a"
    log(
        f"{point.scenario}/{point.point}: window {window.index}: {summary['ok']} OK, {summary['errors']} errors, "
        f"{summary['requests_per_s']:.1f} requests/s, p50 {p50}"
    )


def _log_summary(log: Callable[[str], None], point: LoadPoint, document: dict) -> None:
    stats = document["stats"]
    verdict = "stable" if document["stable"] else f"UNSTABLE after {document['windows_measured']} windows"
    schedule = document["schedule"]
    kept = ""
    if schedule is not None:
        kept = (
            f"; achieved {schedule['achieved_rate_per_s']:.1f} of {schedule['target_rate_per_s']:g} requests/s, "
            f"{schedule['late_pct']:.2f} % sent late by the generator"
        )
    log(
        f"{point.scenario}/{point.point}: {verdict}; {stats['throughput_per_s']:.1f} items/s, "
        f"p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms{kept}"
    )

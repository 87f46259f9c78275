"""The measurement procedure for one (model, batch size) on a freshly loaded model.

1. the first request at this batch size ("first init": graph tracing, allocations),
2. the second ("first AoT": whatever the first left to do),
3. warm-up requests, not recorded: up to ``warmup_requests``, each started only if it
   is expected to end within ``warmup_max_seconds``,
4. timed requests until ``requests`` are done or ``max_seconds`` is spent, but never
   fewer than ``min_requests``; the server's CPU and memory are sampled meanwhile, and
   the whole machine, to flag a series that something else disturbed (disturbance.py).
   The server's own metrics are read just before and just after (server_side.py).

A request is built once (``client.prepare``) and re-sent; the timer
(``time.perf_counter_ns``) brackets the send call alone. Python's garbage collector is
off during the timed requests, as ``timeit`` does, so a collection of the client's
heap never lands inside a request; with ``measure.client_cpus`` the client and the
server run on separate cores (placement.py), and with ``measure.keep_awake`` no CPU
halts between requests (awake.py), both from the first request to the last.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serveprof.measure.awake import awake_if, recorded
from serveprof.measure.inputs import AUTO, InputSettings
from serveprof.measure.placement import pinned
from serveprof.measure.resources import GpuProbe, ResourceSampler
from serveprof.measure.retry import DisturbanceSettings
from serveprof.measure.server_side import ServerLatencyWindow
from serveprof.measure.stats import latency_stats

if TYPE_CHECKING:
    from serveprof.measure.session import Endpoint

NS_PER_MS = 1_000_000
PROGRESS_EVERY_S = 5.0

# Turns a failed send into the exception to raise (for a launched server: the
# launcher's ServerDied, quoting the server log, when the server is gone).
OnError = Callable[[BaseException, str], BaseException]


@dataclass(frozen=True)
class ProcedureSettings:
    """The ``measure:`` config keys that shape a series; serveprof.settings builds it, checked."""

    requests: int
    max_seconds: float
    min_requests: int
    warmup_requests: int
    warmup_max_seconds: float
    resource_interval_s: float
    disturbance: DisturbanceSettings = field(default_factory=DisturbanceSettings)
    client_cpus: tuple[int, ...] | None = None  # None: the kernel places client and server
    keep_awake: bool = False  # a SCHED_IDLE spinner on every CPU during the series (awake.py)
    keep_gc: bool = False  # Python's GC stays on in the timed loop (a benchmark's switch, not a config key)


@dataclass
class TimedSeries:
    latencies_ms: list[float]
    truncated: bool
    truncated_reason: str | None
    elapsed_s: float


class Progress:
    """A log line every few seconds, so a long step shows it is alive."""

    def __init__(self, label: str, target: int, log: Callable[[str], None], every_s: float = PROGRESS_EVERY_S):
        self.label, self.target, self.every_ns = label, target, int(every_s * 1e9)
        self.write = log
        self.started = self.last = time.monotonic_ns()

    def update(self, done: int, total_ns: int) -> None:
        now = time.monotonic_ns()
        if now - self.last >= self.every_ns:
            self.last = now
            self.log(done, total_ns, now)

    def log(self, done: int, total_ns: int, now: int | None = None) -> None:
        now = now or time.monotonic_ns()
        mean = f"{total_ns / done / NS_PER_MS:.3f} ms" if done else "n/a"
        self.write(f"{self.label}: {done}/{self.target} requests, mean {mean}, {(now - self.started) / 1e9:.1f} s")


def time_one(send: Callable[[Any], Any], request: Any, on_error: OnError, what: str) -> float:
    """One timed request, in ms."""
    try:
        start = time.perf_counter_ns()
        send(request)
        end = time.perf_counter_ns()
    except Exception as error:
        raise on_error(error, what) from error
    return (end - start) / NS_PER_MS


def run_warmup(
    send: Callable[[Any], Any],
    request: Any,
    max_requests: int,
    max_seconds: float,
    on_error: OnError,
    expected_ms: float = 0.0,
) -> int:
    """Unrecorded requests until either cap; returns how many were sent.

    A request is started only if, at the latency last seen (``expected_ms`` to begin
    with, the first AoT), it would end within ``max_seconds``: a batch-32 request of a
    big model on a CPU takes a minute, and a 5 s warm-up budget must not cost one.
    """
    deadline = time.monotonic_ns() + int(max_seconds * 1e9)
    expected_ns = int(expected_ms * NS_PER_MS)
    done = 0
    while done < max_requests and time.monotonic_ns() + expected_ns < deadline:
        try:
            start = time.perf_counter_ns()
            send(request)
            expected_ns = time.perf_counter_ns() - start
        except Exception as error:
            raise on_error(error, f"warm-up request {done + 1}") from error
        done += 1
    return done


def run_timed(
    send: Callable[[Any], Any],
    request: Any,
    *,
    requests: int,
    max_seconds: float,
    min_requests: int,
    on_error: OnError,
    progress: Progress | None = None,
    collect_garbage: bool = False,
) -> TimedSeries:
    """Timed requests until ``requests`` or ``max_seconds``, whichever first, but at least ``min_requests``.

    The garbage collector is off meanwhile unless ``collect_garbage`` (a benchmark's switch).
    """
    minimum = min(min_requests, requests)
    durations_ns: list[int] = []
    append = durations_ns.append
    total_ns = 0
    collecting = gc.isenabled() and not collect_garbage
    if collecting:
        gc.collect()  # what has piled up is collected now, not in the first requests after
        gc.disable()
    try:
        started = time.monotonic_ns()
        deadline = started + int(max_seconds * 1e9)
        truncated_reason = None
        while len(durations_ns) < requests:
            if len(durations_ns) >= minimum and time.monotonic_ns() >= deadline:
                truncated_reason = f"max_seconds ({max_seconds:g} s) reached after {len(durations_ns)} requests"
                break
            try:
                start = time.perf_counter_ns()
                send(request)
                end = time.perf_counter_ns()
            except Exception as error:
                raise on_error(error, f"timed request {len(durations_ns) + 1}") from error
            append(end - start)
            if progress is not None:
                total_ns += end - start
                progress.update(len(durations_ns), total_ns)
        elapsed_s = (time.monotonic_ns() - started) / 1e9
    finally:
        if collecting:
            gc.enable()
    return TimedSeries(
        [ns / NS_PER_MS for ns in durations_ns], truncated_reason is not None, truncated_reason, elapsed_s
    )


def measure_series(
    send: Callable[[Any], Any],
    request: Any,
    batch_size: int,
    settings: ProcedureSettings,
    *,
    pid: int | None,
    on_error: OnError,
    log: Callable[[str], None],
    gpu: GpuProbe | None = None,
    window: ServerLatencyWindow | None = None,
    helpers: tuple[int, ...] = (),
) -> tuple[list[float], dict]:
    """Steps 1–4 above; returns the latencies and the stats JSON's measurement fields.

    ``pid`` is the server's (None: not visible from here, so the disturbance sampler cannot
    tell its CPU from others' and does not flag foreign CPU); ``window`` reads the
    server's own latency of the timed requests; ``helpers`` are other processes of ours
    (the keep-awake spinners), whose CPU is not foreign either.
    """
    log(f"batch {batch_size}: first request (first init)")
    first_init = time_one(send, request, on_error, "first request (first init)")
    log(f"batch {batch_size}: first init {first_init:.1f} ms; second request (first AoT)")
    first_aot = time_one(send, request, on_error, "second request (first AoT)")
    log(
        f"batch {batch_size}: first AoT {first_aot:.1f} ms; warm-up (up to {settings.warmup_requests} requests or {settings.warmup_max_seconds:g} s)"
    )
    warmups = run_warmup(
        send, request, settings.warmup_requests, settings.warmup_max_seconds, on_error, expected_ms=first_aot
    )
    log(
        f"batch {batch_size}: {warmups} warm-up request(s); timing up to {settings.requests} requests or {settings.max_seconds:g} s"
    )
    progress = Progress(f"batch {batch_size}", settings.requests, log)
    if window is not None:
        window.open()
    watch = settings.disturbance.sampler([pid, *helpers], server_seen=pid is not None)
    with ResourceSampler(pid, settings.resource_interval_s, gpu=gpu) as sampler, watch:
        series = run_timed(
            send,
            request,
            requests=settings.requests,
            max_seconds=settings.max_seconds,
            min_requests=settings.min_requests,
            on_error=on_error,
            progress=progress,
            collect_garbage=settings.keep_gc,
        )
    server_latency = window.close() if window is not None else None
    disturbance = watch.summary()
    stats = latency_stats(series.latencies_ms, batch_size)
    log(
        f"batch {batch_size}: {stats['count']} timed requests in {series.elapsed_s:.1f} s, mean {stats['mean_ms']:.3f} ms, "
        f"p50 {stats['p50_ms']:.3f} ms" + (f" ({series.truncated_reason})" if series.truncated else "")
    )
    if server_latency and server_latency["count"]:
        log(
            f"batch {batch_size}: the server's own latency over {server_latency['count']} requests: mean "
            f"{server_latency['mean_ms']:.3f} ms, p50 {server_latency['p50_ms']:.3f} ms (histogram bucket estimate)"
        )
    log(
        f"batch {batch_size}: others used {disturbance['foreign_cpu_pct']:.0f} % of a core, steal "
        f"{disturbance['steal_pct']:.1f} %" + (" (disturbed)" if disturbance["flagged"] else "")
    )
    fields = {
        "first_init_ms": first_init,
        "first_aot_ms": first_aot,
        "warmup_requests": warmups,
        "requests_target": settings.requests,
        "min_requests": settings.min_requests,
        "max_seconds": settings.max_seconds,
        "truncated": series.truncated,
        "truncated_reason": series.truncated_reason,
        "timed_seconds": series.elapsed_s,
        "stats": stats,
        "resources": sampler.summary(),
        "disturbance": disturbance,
        "server_latency": server_latency,
    }
    return series.latencies_ms, fields


def measure_batch(
    endpoint: Endpoint,
    batch_size: int,
    settings: ProcedureSettings,
    input_settings: InputSettings,
    gpu: GpuProbe | None,
    log: Callable[[str], None],
    model_type: str = AUTO,
) -> tuple[list[float], dict]:
    """The procedure against ``endpoint`` at one batch size: the latencies, and the stats JSON's fields."""
    input_settings, resolution = endpoint.resolve_input(batch_size, input_settings, model_type)
    request, input_description = endpoint.prepare_request(batch_size, input_settings)
    input_description.update(resolution)
    # Awake first: the spinners take the CPUs this process may use before the client is pinned.
    with awake_if(settings.keep_awake) as awake, pinned(settings.client_cpus, endpoint.pid) as placement:
        latencies, fields = measure_series(
            endpoint.client.send,
            request,
            batch_size,
            settings,
            pid=endpoint.pid,
            on_error=endpoint.on_error(batch_size),
            log=log,
            gpu=gpu,
            window=ServerLatencyWindow(endpoint.metrics_url, endpoint.model, endpoint.protocol),
            helpers=tuple(awake["pids"]) if awake else (),
        )
    return latencies, {"input": input_description, **fields, "placement": placement, "keep_awake": recorded(awake)}

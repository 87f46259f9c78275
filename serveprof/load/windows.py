"""Measurement windows, perf_analyzer's stability rule, and a point's statistics.

A point is measured in windows: of ``window_s`` seconds (perf_analyzer's time windows)
or of ``window_requests`` answers (its count windows). A request belongs to the window
in which its answer arrived. After each window the last ``stable_windows`` (3) are
checked as perf_analyzer checks them (inference_profiler.cc, ``DetermineStability``):
each has answers, and the largest throughput over the smallest, and the largest p50
over the smallest, are both at most ``1 + stability_pct / 100``. The point stops at
the first stable set of windows, or after ``max_windows`` as *unstable*; either way its
statistics are those of the last ``stable_windows`` windows, merged.

Latency is counted from a request's due time (open loop) or its send (closed loop, where
the two are the same), so a server that falls behind an open-loop schedule shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serveprof.load.worker import RECORD_FIELDS
from serveprof.measure.stats import latency_stats

DUE, TAKEN, SENT, DONE, STATUS, CONNECTION = (RECORD_FIELDS.index(name) for name in RECORD_FIELDS)
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class WindowRule:
    """How a point is cut into windows and when it has settled."""

    window_s: float | None  # time windows, or
    window_requests: int | None  # count windows (answers per window)
    stable_windows: int
    max_windows: int
    stability_pct: float


@dataclass(frozen=True)
class Window:
    index: int
    start_ns: int
    end_ns: int
    rows: np.ndarray  # the requests answered in [start_ns, end_ns)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def ok(self) -> np.ndarray:
        return self.rows[self.rows[:, STATUS] == 0]

    def errors_only(self) -> bool:
        """Answers, and none of them OK: a failing server."""
        return len(self.rows) > 0 and not (self.rows[:, STATUS] == 0).any()

    def summary(self, batch_size: int) -> dict:
        ok = self.ok()
        latencies = (ok[:, DONE] - ok[:, DUE]) / NS_PER_MS
        return {
            "index": self.index,
            "start_s": None,  # filled relative to the point's start by the caller
            "seconds": self.seconds,
            "answers": int(len(self.rows)),
            "ok": int(len(ok)),
            "errors": int(len(self.rows) - len(ok)),
            "requests_per_s": len(ok) / self.seconds if self.seconds > 0 else None,
            "throughput_per_s": batch_size * len(ok) / self.seconds if self.seconds > 0 else None,
            "p50_ms": float(np.median(latencies)) if len(latencies) else None,
        }


def p50(rows: np.ndarray) -> float | None:
    ok = rows[rows[:, STATUS] == 0]
    if not len(ok):
        return None
    return float(np.median((ok[:, DONE] - ok[:, DUE]) / NS_PER_MS))


def cut(table: np.ndarray, start_ns: int, covered_ns: int, rule: WindowRule, done: int) -> list[Window]:
    """Windows after the first ``done`` that are complete by ``covered_ns`` (all answers up to then are in)."""
    answered = table[(table[:, DONE] >= start_ns) & (table[:, DONE] < covered_ns)]
    windows: list[Window] = []
    if rule.window_s is not None:
        width = int(rule.window_s * 1e9)
        index = done
        while start_ns + (index + 1) * width <= covered_ns:
            low, high = start_ns + index * width, start_ns + (index + 1) * width
            rows = answered[(answered[:, DONE] >= low) & (answered[:, DONE] < high)]
            windows.append(Window(index, low, high, rows))
            index += 1
        return windows
    ordered = answered[np.argsort(answered[:, DONE], kind="stable")]
    size = rule.window_requests
    index = done
    while (index + 1) * size <= len(ordered):
        rows = ordered[index * size : (index + 1) * size]
        low = start_ns if index == 0 else int(ordered[index * size - 1, DONE]) + 1
        windows.append(Window(index, low, int(rows[-1, DONE]) + 1, rows))
        index += 1
    return windows


def stable(windows: list[Window], rule: WindowRule) -> bool:
    """perf_analyzer's rule on the last ``rule.stable_windows`` windows."""
    if len(windows) < rule.stable_windows:
        return False
    last = windows[-rule.stable_windows :]
    throughputs = [len(window.ok()) / window.seconds for window in last if window.seconds > 0]
    medians = [p50(window.rows) for window in last]
    if len(throughputs) < len(last) or min(throughputs) <= 0 or any(value is None for value in medians):
        return False
    bound = 1 + rule.stability_pct / 100
    return max(throughputs) / min(throughputs) <= bound and max(medians) / max(min(medians), 1e-9) <= bound


def point_stats(windows: list[Window], batch_size: int, statuses: list[str]) -> dict:
    """Statistics of the merged windows: latency percentiles (with the low-sample flags), rates, errors."""
    rows = np.concatenate([window.rows for window in windows]) if windows else np.empty((0, len(RECORD_FIELDS)))
    seconds = sum(window.seconds for window in windows)
    ok = rows[rows[:, STATUS] == 0]
    errors: dict[str, int] = {}
    for code, count in zip(*np.unique(rows[rows[:, STATUS] != 0][:, STATUS], return_counts=True), strict=True):
        errors[statuses[int(code)]] = int(count)
    stats = latency_stats((ok[:, DONE] - ok[:, DUE]) / NS_PER_MS, batch_size) if len(ok) else {"count": 0}
    # latency_stats' throughput is batch / mean latency, a one-at-a-time figure; under load it is what was answered.
    stats["throughput_per_s"] = batch_size * len(ok) / seconds if seconds > 0 else None
    stats["requests_per_s"] = len(ok) / seconds if seconds > 0 else None
    stats["answers"] = int(len(rows))
    stats["errors"] = errors
    stats["seconds"] = seconds
    return stats

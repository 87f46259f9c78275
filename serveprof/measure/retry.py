"""Measure a series again when the machine was busy: ``measure.retry_disturbed`` times at most.

``DisturbanceSettings`` holds the ``measure:`` keys of the disturbance sampler
(serveprof/measure/disturbance.py) and of the retries. ``retried(attempt, ...)`` runs
``attempt()`` (a whole series on a fresh server, built by the caller) until one is not
flagged as disturbed or the retries are spent. It keeps the first undisturbed attempt;
if every attempt was disturbed, the one with the least foreign CPU, since it is the
closest to a quiet machine. The kept attempt's ``disturbance`` record says how many
attempts were made, which was kept and why the others were discarded, so the report
can mark a series that stayed disturbed. Serving jobs of every kind (per-batch series,
cold starts, load points) go through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from serveprof.measure.disturbance import INTERVAL_S, MAX_FOREIGN_CPU_PCT, MAX_STEAL_PCT, DisturbanceSampler, Limits

T = TypeVar("T")
# Figures of a discarded attempt kept in the record: enough to see why it was discarded.
DISCARDED_KEYS = ("flagged", "reasons", "foreign_cpu_pct", "steal_pct")


@dataclass(frozen=True)
class DisturbanceSettings:
    """The ``measure:`` keys that decide when a series counts as disturbed, and what then happens."""

    max_foreign_cpu_pct: float | None = MAX_FOREIGN_CPU_PCT
    max_steal_pct: float | None = MAX_STEAL_PCT
    max_memory_some_pct: float | None = None
    disturbance_interval_s: float = INTERVAL_S
    retry_disturbed: int = 0
    retry_pause_s: float = 5.0

    def limits(self, server_seen: bool = True) -> Limits:
        """The sampler's limits. Without the server's pid its CPU would count as foreign, so
        that check is off (the figures are still recorded)."""
        return Limits(self.max_foreign_cpu_pct if server_seen else None, self.max_steal_pct, self.max_memory_some_pct)

    def sampler(
        self, trees: Iterable[int | None] | Callable[[], Iterable[int | None]], processes=None, server_seen=True
    ) -> DisturbanceSampler:
        return DisturbanceSampler(
            trees, processes, interval_s=self.disturbance_interval_s, limits=self.limits(server_seen)
        )


def _foreign(record: dict) -> float:
    value = record.get("foreign_cpu_pct")
    return float("inf") if value is None else float(value)


def retried(
    attempt: Callable[[], T],
    disturbance_of: Callable[[T], dict],
    settings: DisturbanceSettings,
    log: Callable[[str], None],
    what: str,
) -> T:
    """``attempt()`` until undisturbed, at most ``1 + settings.retry_disturbed`` times; the kept result.

    ``disturbance_of(result)`` is the result's ``disturbance`` record (the sampler's
    summary), which this completes in place with ``attempts``, ``kept_attempt`` and
    ``discarded`` (the other attempts' flags, reasons, foreign CPU and steal).
    """
    results: list[T] = []
    for number in range(1, settings.retry_disturbed + 2):
        if number > 1:
            log(f"{what}: measuring again on a fresh server (attempt {number} of {settings.retry_disturbed + 1})")
            time.sleep(settings.retry_pause_s)  # a short burst elsewhere may be over by then
        result = attempt()
        results.append(result)
        record = disturbance_of(result)
        if not record.get("flagged"):
            break
        log(f"{what}: disturbed ({'; '.join(record.get('reasons') or [])})")
    undisturbed = [index for index, result in enumerate(results) if not disturbance_of(result).get("flagged")]
    kept = (
        undisturbed[0] if undisturbed else min(range(len(results)), key=lambda i: _foreign(disturbance_of(results[i])))
    )
    record = disturbance_of(results[kept])
    record["attempts"] = len(results)
    record["kept_attempt"] = kept + 1
    record["discarded"] = [
        {"attempt": index + 1, **{key: disturbance_of(result).get(key) for key in DISCARDED_KEYS}}
        for index, result in enumerate(results)
        if index != kept
    ]
    if record.get("flagged") and len(results) > 1:
        log(f"{what}: still disturbed after {len(results)} attempts; kept attempt {kept + 1} (least foreign CPU)")
    return results[kept]


def disturbance_columns(record: dict | None) -> dict:
    """The disturbance figures a result CSV row carries (summary.csv, coldstart.csv); empty without a record."""
    record = record or {}
    reasons = record.get("reasons")
    return {
        "disturbed": record.get("flagged"),
        "foreign_cpu_pct": record.get("foreign_cpu_pct"),
        "steal_pct": record.get("steal_pct"),
        "attempts": record.get("attempts"),
        "disturbance_reasons": "; ".join(reasons) if reasons else None,
    }

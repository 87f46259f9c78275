"""How one series changed between two runs, and whether the change is more than noise.

For the raw latencies of a series in the base and the new run, one bootstrap
(``scipy.stats.bootstrap``, percentile intervals, the two runs resampled
independently) gives confidence intervals for:

- the difference of the medians and of the p99s, in ms and relative to the base;
- the throughput change (items per second is ``batch · 1000 / mean``, so its relative
  change is ``mean_base / mean_new − 1``).

Percentiles are nearest-rank, as in the stats (``numpy``'s ``inverted_cdf`` is that
definition), so the point estimates equal the summary's p50 and p99.

A latency metric is a **regression** (slower) or an **improvement** (faster) only
when its interval of the relative change excludes zero *and* the change itself is
larger than the threshold; otherwise it is **within noise**. Below a minimum number of
requests per side no verdict is given (**too few requests**): for p99 that is
MLPerf LoadGen's minimum sample count, as for the stats' low-sample flag.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from serveprof.errors import ServeprofError
from serveprof.measure.stats import MIN_SAMPLES_FOR_PERCENTILE

METRICS = {"p50": 0.50, "p99": 0.99}
# Requests per side below which a metric gets no verdict. p50: the percentile interval
# of the median change covered about 95 % from 10 skewed latencies per side up
# (benchmarks/bench_compare.py); 20 keeps a margin for heavier tails than those.
# p99: LoadGen's minimum, as the stats use it.
MIN_REQUESTS = {"p50": 20, "p99": MIN_SAMPLES_FOR_PERCENTILE[99]}
THRESHOLD_PCT = 5.0
CONFIDENCE = 0.95
RESAMPLES = 2000
# Resamples drawn at once: bounds memory at about 16 MB of float64 per side.
MAX_ELEMENTS_PER_BATCH = 2_000_000

REGRESSION, IMPROVEMENT, NOISE, TOO_FEW = "regression", "improvement", "within noise", "too few requests"
VERDICTS = (REGRESSION, IMPROVEMENT, NOISE, TOO_FEW)


@dataclass(frozen=True)
class Settings:
    threshold_pct: float = THRESHOLD_PCT
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = 0

    def __post_init__(self):
        if not self.threshold_pct >= 0:
            raise ServeprofError(
                f"--threshold-pct is {self.threshold_pct}", "give a percentage of 0 or more, e.g. --threshold-pct 5"
            )
        if not 0 < self.confidence < 1:
            raise ServeprofError(
                f"--confidence is {self.confidence}", "give a level between 0 and 1, e.g. --confidence 0.95"
            )
        if self.resamples < 100:
            raise ServeprofError(
                f"--resamples is {self.resamples}", "give at least 100 resamples (the default is 2000)"
            )


def quantiles(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """p50 and p99, nearest-rank, along ``axis`` (first axis of the result: the metric)."""
    return np.quantile(values, list(METRICS.values()), axis=axis, method="inverted_cdf")


def _statistic(base: np.ndarray, new: np.ndarray, axis: int = -1) -> np.ndarray:
    """[Δp50 ms, Δp99 ms, Δp50 rel, Δp99 rel, throughput rel] for (batches of) resamples."""
    q_base, q_new = quantiles(base, axis), quantiles(new, axis)
    throughput = np.mean(base, axis=axis) / np.mean(new, axis=axis) - 1.0
    return np.concatenate([q_new - q_base, q_new / q_base - 1.0, throughput[np.newaxis]])


def series_seed(seed: int, label: str) -> np.random.Generator:
    """A generator per series: the same inputs give the same intervals in any order or subset."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def _verdict(change: float, low: float, high: float, threshold_pct: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOISE
    excludes_zero = low > 0 or high < 0
    if excludes_zero and abs(change) * 100 > threshold_pct:
        return REGRESSION if change > 0 else IMPROVEMENT
    return NOISE


def compare_latencies(base: np.ndarray, new: np.ndarray, settings: Settings, label: str = "") -> dict:
    """The changes of one series; a flat dict, one entry per figure (see the module doc)."""
    from scipy import stats

    base, new = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if base.size == 0 or new.size == 0:
        raise ServeprofError(f"{label or 'a series'} has no latencies in one of the runs", "rerun that measurement")
    point = _statistic(base, new)
    low = high = np.full(point.shape, np.nan)
    if min(base.size, new.size) >= 2:
        batch = max(1, MAX_ELEMENTS_PER_BATCH // max(base.size, new.size))
        result = stats.bootstrap(
            (base, new), _statistic, n_resamples=settings.resamples, confidence_level=settings.confidence,
            method="percentile", vectorized=True, batch=batch, rng=series_seed(settings.seed, label),
        )  # fmt: skip
        low, high = result.confidence_interval.low, result.confidence_interval.high
    row: dict = {"base_count": int(base.size), "new_count": int(new.size)}
    q_base, q_new = quantiles(base), quantiles(new)
    for index, metric in enumerate(METRICS):
        relative = len(METRICS) + index
        enough = min(base.size, new.size) >= MIN_REQUESTS[metric]
        row.update({
            f"{metric}_base_ms": float(q_base[index]),
            f"{metric}_new_ms": float(q_new[index]),
            f"{metric}_diff_ms": float(point[index]),
            f"{metric}_diff_low_ms": float(low[index]),
            f"{metric}_diff_high_ms": float(high[index]),
            f"{metric}_change_pct": 100 * float(point[relative]),
            f"{metric}_change_low_pct": 100 * float(low[relative]),
            f"{metric}_change_high_pct": 100 * float(high[relative]),
            f"{metric}_verdict": _verdict(point[relative], low[relative], high[relative], settings.threshold_pct) if enough else TOO_FEW,
        })  # fmt: skip
    row.update({
        "throughput_change_pct": 100 * float(point[-1]),
        "throughput_change_low_pct": 100 * float(low[-1]),
        "throughput_change_high_pct": 100 * float(high[-1]),
    })  # fmt: skip
    return row


def overall(verdicts: list[str]) -> str:
    """A series' verdict from its metrics': any regression is one; then any improvement."""
    for verdict in (REGRESSION, IMPROVEMENT, NOISE):
        if verdict in verdicts:
            return verdict
    return TOO_FEW

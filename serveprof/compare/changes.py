"""How one series changed between two runs, and whether the change is more than noise.

For the raw latencies of a series in the base and the new run, one bootstrap
(``scipy.stats.bootstrap``, percentile intervals, the two runs resampled
independently) gives confidence intervals for:

- the difference of the medians and of the p99s, in ms and relative to the base;
- the throughput change (items per second is ``batch · 1000 / mean``, so its relative
  change is ``mean_base / mean_new − 1``).

Where a run measured the series as several repeats, each on a fresh server
(``measure.repeats``), its side is resampled in two levels instead: repeats with
replacement, then requests within each drawn repeat. Fresh servers differ by more
than their requests' sampling noise says (docs/measurement.md, "Repeatability"), and
only the two levels carry that spread into the interval. scipy's bootstrap resamples
one level, so this resampler is our own (``two_level_resamples``).

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


def two_level_resamples(parts: list[np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` resamples (rows) of a series measured as ``parts`` (its repeats): each row draws as many
    repeats as there are, with replacement, and from each drawn repeat as many requests as its slot had."""
    sizes = np.array([part.size for part in parts])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pooled = np.concatenate(parts)
    slot_of_column = np.repeat(np.arange(len(parts)), sizes)
    drawn = rng.integers(len(parts), size=(count, len(parts)))[:, slot_of_column]  # the repeat each column draws from
    within = (rng.random((count, pooled.size)) * sizes[drawn]).astype(np.int64)
    return pooled[offsets[drawn] + within]


def _two_level_interval(
    base: list[np.ndarray], new: list[np.ndarray], point: np.ndarray, settings: Settings, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``_statistic`` over two-level resamples of both sides, expanded about ``point``
    (the statistic of the pooled latencies)."""
    rng = series_seed(settings.seed, label)
    batch = max(1, MAX_ELEMENTS_PER_BATCH // max(sum(map(len, base)), sum(map(len, new))))
    replicates = []
    for start in range(0, settings.resamples, batch):
        count = min(batch, settings.resamples - start)
        replicates.append(_statistic(two_level_resamples(base, count, rng), two_level_resamples(new, count, rng)))
    values = np.concatenate(replicates, axis=1)
    alpha = (1 - settings.confidence) / 2
    low, high = np.quantile(values, alpha, axis=1), np.quantile(values, 1 - alpha, axis=1)
    scale = expansion(min(len(side) for side in (base, new) if len(side) > 1), settings.confidence)
    return point - scale * (point - low), point + scale * (high - point)


def expansion(repeats: int, confidence: float) -> float:
    """How much wider a two-level interval is drawn than its percentiles, for ``repeats`` servers a side.

    Resampling R repeats underestimates their spread by (R − 1)/R and has normal tails
    where R values call for Student's t (Hesterberg's expanded percentile interval):
    ``sqrt(R / (R − 1)) · t(R − 1) / z``, 2.7 at 3 repeats, 1.6 at 5, 1.2 at 20."""
    from scipy.stats import norm, t

    tail = 0.5 + confidence / 2
    return float(np.sqrt(repeats / (repeats - 1)) * t.ppf(tail, repeats - 1) / norm.ppf(tail))


def _parts(series) -> list[np.ndarray]:
    """A side as its repeats: a list of arrays, or one array for a series measured once."""
    if isinstance(series, np.ndarray) or (len(series) and np.isscalar(series[0])):
        return [np.asarray(series, dtype=float)]
    return [np.asarray(part, dtype=float) for part in series]


def compare_latencies(base, new, settings: Settings, label: str = "") -> dict:
    """The changes of one series; a flat dict, one entry per figure (see the module doc).

    ``base`` and ``new`` are each the series' latencies, or a list of its repeats' latencies."""
    from scipy import stats

    base_parts, new_parts = _parts(base), _parts(new)
    base, new = np.concatenate(base_parts), np.concatenate(new_parts)
    if base.size == 0 or new.size == 0 or any(part.size == 0 for part in base_parts + new_parts):
        raise ServeprofError(f"{label or 'a series'} has no latencies in one of the runs", "rerun that measurement")
    point = _statistic(base, new)
    low = high = np.full(point.shape, np.nan)
    repeats = max(len(base_parts), len(new_parts)) > 1
    if repeats:
        low, high = _two_level_interval(base_parts, new_parts, point, settings, label)
    elif min(base.size, new.size) >= 2:
        batch = max(1, MAX_ELEMENTS_PER_BATCH // max(base.size, new.size))
        result = stats.bootstrap(
            (base, new), _statistic, n_resamples=settings.resamples, confidence_level=settings.confidence,
            method="percentile", vectorized=True, batch=batch, rng=series_seed(settings.seed, label),
        )  # fmt: skip
        low, high = result.confidence_interval.low, result.confidence_interval.high
    row: dict = {
        "base_count": int(base.size),
        "new_count": int(new.size),
        "base_repeats": len(base_parts),
        "new_repeats": len(new_parts),
        "interval": "repeats and requests" if repeats else "requests",
    }
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

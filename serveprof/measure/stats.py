"""Latency statistics for one (model, batch) series.

Percentiles use the nearest-rank method, as MLPerf LoadGen does: the p-th percentile
of n sorted latencies is the value at 1-based rank ceil(p/100 · n). It is always an
observed latency (no interpolation), so a p99 is a request that really happened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from serveprof.errors import ServeprofError

PERCENTILES = (50, 90, 95, 99)

# MLPerf LoadGen's early-stopping minimum sample counts: below these a tail percentile
# rests on too few requests to be trusted, so the stats list it as low-sample.
MIN_SAMPLES_FOR_PERCENTILE = {90: 64, 95: 130, 99: 662}


def nearest_rank(sorted_values: Sequence[float], percentile: int) -> float:
    """The value at 1-based rank ceil(percentile/100 · n) of an ascending sequence."""
    n = len(sorted_values)
    # Integer ceiling of percentile·n/100: float p/100·n can land a hair above an
    # integer (0.07 · 100 = 7.000000000000001) and pick the next rank.
    rank = max(1, -(-percentile * n // 100))
    return float(sorted_values[rank - 1])


def low_sample_percentiles(count: int) -> list[str]:
    return [f"p{p}" for p, minimum in MIN_SAMPLES_FOR_PERCENTILE.items() if count < minimum]


def latency_stats(latencies_ms: Sequence[float], batch_size: int) -> dict:
    """count, mean, sample std (ddof=1), min, max, nearest-rank percentiles, throughput.

    ``std_ms`` is None for a single latency (a sample std needs two). Throughput is
    ``batch_size · 1000 / mean_ms`` items per second.
    """
    values = sorted(float(value) for value in latencies_ms)
    if not values:
        raise ServeprofError(
            "no latencies to summarise (the series is empty)",
            "measure at least one request (--requests and --min-requests of 1 or more)",
        )
    if batch_size < 1:
        raise ServeprofError(f"batch size {batch_size} is not a positive whole number", "use a batch size of 1 or more")
    bad = [value for value in values if not math.isfinite(value) or value < 0]
    if bad:
        raise ServeprofError(
            f"latencies must be finite and non-negative; got {bad[0]!r}", "check the latency file or the timer"
        )
    count = len(values)
    mean = math.fsum(values) / count
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (count - 1)) if count > 1 else None
    stats = {"count": count, "mean_ms": mean, "std_ms": std, "min_ms": values[0], "max_ms": values[-1]}
    for percentile in PERCENTILES:
        stats[f"p{percentile}_ms"] = nearest_rank(values, percentile)
    stats["throughput_per_s"] = batch_size * 1000.0 / mean if mean > 0 else None
    stats["low_sample_percentiles"] = low_sample_percentiles(count)
    return stats

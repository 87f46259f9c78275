"""latency_stats against values worked out by hand (nearest rank, sample std, throughput)."""

from __future__ import annotations

import math

import pytest

from serveprof.errors import ServeprofError
from serveprof.measure.stats import latency_stats, nearest_rank


def test_ten_latencies_by_hand():
    # Given out of order; sorted they are 1, 2, ..., 10.
    stats = latency_stats([5, 1, 3, 2, 4, 9, 7, 6, 10, 8], batch_size=4)
    assert stats["count"] == 10
    assert stats["mean_ms"] == 5.5  # 55 / 10
    # Squared deviations from 5.5: 2 × (0.25 + 2.25 + 6.25 + 12.25 + 20.25) = 82.5;
    # sample variance 82.5 / (10 - 1) = 9.1666…; std = sqrt(9.1666…) = 3.0276503540974917.
    assert stats["std_ms"] == pytest.approx(3.0276503540974917, rel=1e-12)
    assert (stats["min_ms"], stats["max_ms"]) == (1.0, 10.0)
    # Nearest rank ceil(p/100 · 10): p50 -> rank 5, p90 -> 9, p95 -> ceil(9.5) = 10, p99 -> ceil(9.9) = 10.
    assert (stats["p50_ms"], stats["p90_ms"], stats["p95_ms"], stats["p99_ms"]) == (5.0, 9.0, 10.0, 10.0)
    # 4 items per request, 5.5 ms per request: 4 × 1000 / 5.5 = 727.2727… items per second.
    assert stats["throughput_per_s"] == pytest.approx(727.2727272727273, rel=1e-12)
    # 10 samples are below every minimum (64 for p90, 130 for p95, 662 for p99).
    assert stats["low_sample_percentiles"] == ["p90", "p95", "p99"]


def test_seven_latencies_with_ties_by_hand():
    # Sorted: 10, 20, 20, 30, 30, 30, 70 (ties at 20 and 30).
    stats = latency_stats([30, 20, 70, 30, 10, 30, 20], batch_size=1)
    assert stats["mean_ms"] == 30.0  # 210 / 7
    # Deviations -20, -10, -10, 0, 0, 0, 40: squares sum to 400 + 100 + 100 + 1600 = 2200;
    # 2200 / 6 = 366.666…; sqrt = 19.148542155126762.
    assert stats["std_ms"] == pytest.approx(19.148542155126762, rel=1e-12)
    # p50: rank ceil(3.5) = 4 -> the 4th value, the first of the tied 30s.
    # p90: ceil(6.3) = 7, p95: ceil(6.65) = 7, p99: ceil(6.93) = 7 -> 70, the maximum.
    assert (stats["p50_ms"], stats["p90_ms"], stats["p95_ms"], stats["p99_ms"]) == (30.0, 70.0, 70.0, 70.0)
    assert stats["throughput_per_s"] == pytest.approx(1000 / 30, rel=1e-12)  # 33.33 items/s


def test_twenty_latencies_land_on_exact_ranks():
    # p · n / 100 is a whole number for p90 (18) and p95 (19): the rank is that number,
    # not the next one, so p90 = 18 and p95 = 19; p99: ceil(19.8) = 20; p50: 10.
    stats = latency_stats(range(1, 21), batch_size=2)
    assert (stats["p50_ms"], stats["p90_ms"], stats["p95_ms"], stats["p99_ms"]) == (10.0, 18.0, 19.0, 20.0)


def test_one_latency():
    stats = latency_stats([12.5], batch_size=2)
    assert stats["count"] == 1
    assert stats["mean_ms"] == stats["min_ms"] == stats["max_ms"] == 12.5
    assert stats["std_ms"] is None  # a sample std needs two values
    assert all(stats[f"p{p}_ms"] == 12.5 for p in (50, 90, 95, 99))  # every rank is rank 1
    assert stats["throughput_per_s"] == 160.0  # 2 × 1000 / 12.5


@pytest.mark.parametrize(
    "count, flagged",
    [
        (63, ["p90", "p95", "p99"]),
        (64, ["p95", "p99"]),
        (129, ["p95", "p99"]),
        (130, ["p99"]),
        (661, ["p99"]),
        (662, []),
    ],
)
def test_low_sample_percentiles_follow_the_mlperf_minimums(count, flagged):
    assert latency_stats([1.0] * count, batch_size=1)["low_sample_percentiles"] == flagged


def test_nearest_rank_on_a_thousand_values():
    values = [float(v) for v in range(1, 1001)]
    # ceil(p/100 · 1000) = 10·p exactly: p50 -> 500, p99 -> 990.
    assert [nearest_rank(values, p) for p in (50, 90, 95, 99)] == [500.0, 900.0, 950.0, 990.0]


def test_empty_series_is_a_clear_error():
    with pytest.raises(ServeprofError, match="no latencies"):
        latency_stats([], batch_size=1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_impossible_latencies_are_refused(bad):
    with pytest.raises(ServeprofError, match="finite and non-negative"):
        latency_stats([1.0, bad], batch_size=1)

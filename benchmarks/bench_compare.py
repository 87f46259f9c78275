"""What `serveprof compare`'s statistics cost, and how well its intervals cover.

1. Per series, ``scipy.stats.bootstrap`` (what compare uses: percentile intervals,
   vectorised, in batches) beside a hand-written numpy resampler (index matrix +
   ``np.quantile``), in alternating rounds, 1000 latencies per side and 2000
   resamples: the median time of each, and how far their interval ends lie apart.
2. Coverage of the median-change interval on skewed latencies with no true change,
   per series length, over seeded draws: the reason for compare's minimum of 20
   requests per side before a p50 verdict.
3. A whole comparison of a reference-sized pair of runs (8 models × 6 batch sizes ×
   1000 requests) through ``compare_trees``: the wall time.

Run: .venv/bin/python benchmarks/bench_compare.py [--rounds 7] [--draws 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serveprof.compare.changes import Settings, _statistic, compare_latencies, series_seed  # noqa: E402
from serveprof.compare.comparison import compare_trees  # noqa: E402
from serveprof.compare.trees import read_tree  # noqa: E402
from tests.compare_helpers import latencies, write_run  # noqa: E402


def numpy_bootstrap(
    base: np.ndarray, new: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    stats = []
    batch = max(1, 2_000_000 // max(base.size, new.size))
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        a = base[rng.integers(0, base.size, (size, base.size))]
        b = new[rng.integers(0, new.size, (size, new.size))]
        stats.append(_statistic(a, b, axis=-1))
    values = np.concatenate(stats, axis=-1)
    return np.percentile(values, 2.5, axis=-1), np.percentile(values, 97.5, axis=-1)


def scipy_bootstrap(base, new, resamples, rng):
    from scipy import stats

    batch = max(1, 2_000_000 // max(base.size, new.size))
    result = stats.bootstrap(
        (base, new), _statistic, n_resamples=resamples, method="percentile", vectorized=True, batch=batch, rng=rng
    )
    return result.confidence_interval.low, result.confidence_interval.high


def per_series(rounds: int) -> None:
    rng = np.random.default_rng(0)
    base, new = latencies(rng, 40.0, 1000), latencies(rng, 41.0, 1000)
    times = {"scipy": [], "numpy": []}
    ends = {}
    for round_ in range(rounds):
        order = ("scipy", "numpy") if round_ % 2 == 0 else ("numpy", "scipy")
        for name in order:
            run = scipy_bootstrap if name == "scipy" else numpy_bootstrap
            started = time.perf_counter()
            ends[name] = run(base, new, 2000, series_seed(round_, "bench"))
            times[name].append(time.perf_counter() - started)
    scipy_ms, numpy_ms = (1000 * statistics.median(times[name]) for name in ("scipy", "numpy"))
    print(f"per series (1000 + 1000 latencies, 2000 resamples): scipy.stats.bootstrap {scipy_ms:.0f} ms,"
          f" numpy by hand {numpy_ms:.0f} ms, ratio {scipy_ms / numpy_ms:.2f} (medians of {rounds})")  # fmt: skip
    difference = max(float(np.max(np.abs(ends["scipy"][side] - ends["numpy"][side]))) for side in (0, 1))
    # With one seed both draw the same index matrices, so any difference is the library's own arithmetic.
    print(f"  interval ends, same seed: largest difference {difference:.3g} (ms or fraction)")


def coverage(draws: int) -> None:
    settings = Settings(resamples=1000)
    for count in (10, 20, 50, 100):
        covered = 0
        for seed in range(draws):
            rng = np.random.default_rng(10_000 + seed)
            row = compare_latencies(
                latencies(rng, 40.0, count, 0.3), latencies(rng, 40.0, count, 0.3), settings, f"c{seed}"
            )
            covered += row["p50_change_low_pct"] <= 0 <= row["p50_change_high_pct"]
        print(
            f"coverage of the 95 % p50-change interval, {count:4d} requests per side, no true change:"
            f" {covered / draws:.3f} ({draws} draws)"
        )


def whole_comparison() -> None:
    rng = np.random.default_rng(1)
    models = {f"model{i}": 30.0 * 1.6**i for i in range(8)}
    with tempfile.TemporaryDirectory() as folder:
        for run in ("base", "new"):
            series = {model: {batch: latencies(rng, typical * batch**0.9, 1000) for batch in (1, 2, 4, 8, 16, 32)}
                      for model, typical in models.items()}  # fmt: skip
            write_run(Path(folder) / run, series)
        started = time.perf_counter()
        comparison = compare_trees(read_tree(Path(folder) / "base"), read_tree(Path(folder) / "new"))
        elapsed = time.perf_counter() - started
    flagged = int((comparison.rows["verdict"] != "within noise").sum())
    print(
        f"compare_trees, 48 series × 1000 requests per run, 2000 resamples: {elapsed:.1f} s"
        f" ({len(comparison.rows)} series, {flagged} verdicts other than noise)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    per_series(args.rounds)
    coverage(args.draws)
    whole_comparison()


if __name__ == "__main__":
    main()

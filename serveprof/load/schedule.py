"""When an open-loop worker's requests are due: constant spacing or Poisson arrivals.

A rate of R requests/s spread over P worker processes gives each worker R/P. Constant
arrivals are interleaved (worker k is offset by k/R), so together the workers keep an
even spacing of 1/R; Poisson arrivals draw independent exponential gaps per worker from
``numpy.random.default_rng((seed, k))``, and a sum of independent Poisson streams is
a Poisson stream of the summed rate. The same seed gives the same schedule.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

ARRIVALS = ("constant", "poisson")
CHUNK = 4096  # gaps drawn at a time


def offsets_ns(rate_per_s: float, arrival: str, seed: int, worker: int, workers: int) -> Iterator[int]:
    """Due times of one worker's requests, in ns after the load starts, ascending and unbounded."""
    if rate_per_s <= 0:
        raise ValueError(f"rate must be positive, got {rate_per_s}")
    if arrival == "constant":
        period_ns = 1e9 * workers / rate_per_s
        first_ns = 1e9 * worker / rate_per_s
        index = 0
        while True:
            yield int(first_ns + index * period_ns)
            index += 1
    elif arrival == "poisson":
        rng = np.random.default_rng((seed, worker))
        mean_gap_ns = 1e9 * workers / rate_per_s
        elapsed = 0.0
        while True:
            for gap in rng.exponential(mean_gap_ns, CHUNK):
                elapsed += gap
                yield int(elapsed)
    else:
        raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")

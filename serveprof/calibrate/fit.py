"""``device = a·host + b`` by least squares, with what a user needs to trust it.

- the fit (``scipy.stats.linregress``): slope, intercept, their standard errors, R²;
- the OLS prediction interval of a new point at ``x0``:
  ``ŷ ± t(1 − α/2, n − 2) · s · √(1 + 1/n + (x0 − x̄)² / Sxx)``, with ``s`` the residual
  standard deviation; it covers where a new measurement will fall, not only the line;
- leave-one-out: each point predicted by the line fitted to the others, which says
  how far off a prediction for an unmeasured model is likely to be;
- rank agreement of host and device (Kendall's τ, Spearman's ρ, ``scipy.stats``):
  whether the host ranks the models as the device does, whatever the line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serveprof.errors import ServeprofError

MIN_POINTS = 3  # a line and a residual: two points fit exactly and say nothing of the error


@dataclass(frozen=True)
class Line:
    slope: float
    intercept: float
    r2: float
    slope_stderr: float
    intercept_stderr: float
    residual_std: float  # s, with n - 2 degrees of freedom
    n: int
    x_mean: float
    sxx: float  # Σ(x − x̄)²
    x_min: float
    x_max: float

    def predict(self, x) -> np.ndarray:
        return self.slope * np.asarray(x, dtype=float) + self.intercept

    def prediction_interval(self, x, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the OLS prediction interval for new observations at ``x``."""
        from scipy import stats

        x = np.asarray(x, dtype=float)
        t = stats.t.ppf(0.5 + level / 2, self.n - 2)
        half = t * self.residual_std * np.sqrt(1 + 1 / self.n + (x - self.x_mean) ** 2 / self.sxx)
        centre = self.predict(x)
        return centre - half, centre + half

    def equation(self, unit: str = "") -> str:
        sign = "+" if self.intercept >= 0 else "−"
        return f"y = {self.slope:.3g}·x {sign} {abs(self.intercept):.3g}{(' ' + unit) if unit else ''}"


def fit_line(x, y, what: str = "the points") -> Line:
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < MIN_POINTS:
        raise ServeprofError(
            f"{what} has {x.size} point(s); a line with an error estimate needs at least {MIN_POINTS}",
            f"measure at least {MIN_POINTS} (model, batch size) pairs on the device, or leave it out of the CSV",
        )
    if np.ptp(x) == 0:
        raise ServeprofError(f"{what}: every profiled value is the same ({x[0]:g}), so no line can be fitted",
                             "measure models or batch sizes whose host results differ")  # fmt: skip
    result = stats.linregress(x, y)
    residuals = y - (result.slope * x + result.intercept)
    return Line(
        slope=float(result.slope), intercept=float(result.intercept), r2=float(result.rvalue**2),
        slope_stderr=float(result.stderr), intercept_stderr=float(result.intercept_stderr),
        residual_std=float(np.sqrt(np.sum(residuals**2) / (x.size - 2))), n=int(x.size),
        x_mean=float(x.mean()), sxx=float(np.sum((x - x.mean()) ** 2)), x_min=float(x.min()), x_max=float(x.max()),
    )  # fmt: skip


def leave_one_out(x, y) -> np.ndarray:
    """Each y_i as predicted by the line through the other points (needs 3 or more points)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    predictions = np.full(x.size, np.nan)
    for index in range(x.size):
        keep = np.arange(x.size) != index
        if np.ptp(x[keep]) == 0:
            continue  # the others share one x: no line through them
        result = stats.linregress(x[keep], y[keep])
        predictions[index] = result.slope * x[index] + result.intercept
    return predictions


@dataclass(frozen=True)
class Ranks:
    kendall_tau: float
    kendall_p: float
    spearman_rho: float
    spearman_p: float
    n: int


def rank_agreement(x, y) -> Ranks:
    """Kendall's τ-b and Spearman's ρ between host and device values (NaN below 2 points)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2:
        return Ranks(np.nan, np.nan, np.nan, np.nan, int(x.size))
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    return Ranks(float(tau.statistic), float(tau.pvalue), float(rho.statistic), float(rho.pvalue), int(x.size))

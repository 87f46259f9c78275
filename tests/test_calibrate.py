"""`serveprof calibrate` on synthetic device data with a known line, and its refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from serveprof import settings
from serveprof.calibrate.calibration import calibrate
from serveprof.calibrate.fit import fit_line, leave_one_out, rank_agreement
from serveprof.calibrate.fit_figure import build_fit_figure
from serveprof.calibrate.measured import read_measured
from serveprof.cli import main as serveprof
from serveprof.errors import ServeprofError
from serveprof.report.results import load_summary
from tests.report_helpers import PROFILED, PROFILING

REPO = PROFILING.parents[3]
EXAMPLE = REPO / "docs" / "examples" / "device_measurements.csv"


def test_known_line_is_recovered_within_its_standard_errors():
    rng = np.random.default_rng(7)
    a, b, noise = 3.2, 15.0, 4.0
    x = rng.uniform(20, 400, 12)
    line = fit_line(x, a * x + b + rng.normal(0, noise, x.size))
    assert abs(line.slope - a) < 3 * line.slope_stderr and line.slope_stderr < 0.05
    assert abs(line.intercept - b) < 3 * line.intercept_stderr and line.intercept_stderr < 5
    assert line.residual_std == pytest.approx(noise, rel=0.5)
    assert line.r2 > 0.99
    exact = fit_line(x, a * x + b)
    assert (exact.slope, exact.intercept, exact.r2) == pytest.approx((a, b, 1.0))
    assert np.allclose(leave_one_out(x, a * x + b), a * x + b)  # a perfect line predicts every left-out point


def test_prediction_interval_covers_new_measurements_as_often_as_it_says():
    """Over 400 seeded draws of 6 device points, a 95 % interval holds the next measurement ~95 % of the time.

    The interval for the line alone (no ``1 +`` under the root) would cover far less,
    which is what the second count checks: the OLS prediction interval is the right one.
    """
    rng = np.random.default_rng(11)
    a, b, noise = 2.0, 10.0, 5.0
    covered = narrow = 0
    draws = 400
    for _ in range(draws):
        x = rng.uniform(10, 100, 6)
        line = fit_line(x, a * x + b + rng.normal(0, noise, x.size))
        x0 = rng.uniform(10, 100)
        y0 = a * x0 + b + rng.normal(0, noise)
        low, high = line.prediction_interval(x0, 0.95)
        covered += low <= y0 <= high
        # The same interval without the new point's own scatter (the "1 +"): the line's interval only.
        spread = (x0 - line.x_mean) ** 2 / line.sxx
        confidence_half = (high - low) / 2 * np.sqrt(1 / line.n + spread) / np.sqrt(1 + 1 / line.n + spread)
        narrow += abs(y0 - line.predict(x0)) <= confidence_half
    assert 0.92 <= covered / draws <= 0.98
    assert narrow / draws < 0.85  # measured: 0.79 with this seed


def test_leave_one_out_error_exceeds_in_sample_error_on_noisy_data():
    rng = np.random.default_rng(5)
    x = rng.uniform(10, 200, 8)
    y = 1.5 * x + 3 + rng.normal(0, 6, x.size)
    line = fit_line(x, y)
    assert np.mean(np.abs(leave_one_out(x, y) - y)) > np.mean(np.abs(line.predict(x) - y))


def test_rank_agreement_on_known_permutations():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    same = rank_agreement(x, x * 10)
    assert (same.kendall_tau, same.spearman_rho) == pytest.approx((1.0, 1.0))
    reversed_ = rank_agreement(x, x[::-1])
    assert (reversed_.kendall_tau, reversed_.spearman_rho) == pytest.approx((-1.0, -1.0))
    swapped = rank_agreement(x, np.array([1.0, 3.0, 2.0, 4.0, 5.0]))  # one adjacent pair swapped
    assert swapped.kendall_tau == pytest.approx(0.8)  # 9 concordant, 1 discordant of 10 pairs
    assert swapped.spearman_rho == pytest.approx(0.9)  # 1 − 6·Σd²/(n(n²−1)) = 1 − 12/120


def write_measured(path, rows, memory: bool = False) -> None:
    header = "model,batch_size,device,latency_ms" + (",peak_memory_mb" if memory else "")
    path.write_text(header + "\n" + "\n".join(",".join(map(str, row)) for row in rows) + "\n")


def synthetic_device(tmp_path, a=4.0, b=20.0, noise=3.0, seed=3):
    """A device 4× slower than the fixture host plus 20 ms, measured on inception and nasnet."""
    summary = load_summary(PROFILING, PROFILED).set_index(["model", "batch_size"])
    rng = np.random.default_rng(seed)
    rows = []
    for model in ("inception", "nasnet"):
        for batch in (1, 2, 4):
            host = summary.at[(model, batch), "mean_ms"]
            memory = 0.5 * summary.at[(model, batch), "rss_peak_mb"] - 100 + rng.normal(0, 2)
            rows.append((model, batch, "edge", round(a * host + b + rng.normal(0, noise), 3), round(memory, 1)))
    path = tmp_path / "device.csv"
    write_measured(path, rows, memory=True)
    return path, summary


def test_calibrate_fits_predicts_and_draws(tmp_path, capsys):
    path, summary = synthetic_device(tmp_path)
    out = tmp_path / "out"
    assert serveprof(["calibrate", "--measured", str(path), "--results", str(PROFILING), "--out", str(out),
                      "--style", '{"formats": ["png"]}']) == 0  # fmt: skip
    fits = pd.read_csv(out / "fits.csv").set_index("metric")
    assert fits.at["latency", "slope"] == pytest.approx(4.0, abs=0.15)
    assert fits.at["latency", "intercept"] == pytest.approx(20.0, abs=8)
    assert fits.at["memory", "slope"] == pytest.approx(0.5, abs=0.05)
    assert fits.at["latency", "kendall_tau"] == pytest.approx(1.0)
    predictions = pd.read_csv(out / "predictions.csv")
    latency = predictions[predictions["metric"] == "latency"].set_index(["model", "batch_size"])
    # every profiled pair not measured on the device is predicted, and only those
    measured = {(model, batch) for model in ("inception", "nasnet") for batch in (1, 2, 4)}
    expected = {(model, batch) for model in PROFILED for batch in (1, 2, 4, 8)} - measured
    assert set(latency.index) == expected
    truth = 4.0 * summary.at[("ssd_mobilenet", 2), "mean_ms"] + 20.0
    assert latency.at[("ssd_mobilenet", 2), "low"] < truth < latency.at[("ssd_mobilenet", 2), "high"]
    assert latency.at[("ssd_mobilenet", 8), "extrapolated"] and not latency.at[("ssd_mobilenet", 2), "extrapolated"]
    assert (latency["low"] < latency["predicted"]).all() and (latency["predicted"] < latency["high"]).all()
    for name in ("calibration.md", "fits.md", "points.csv", "ranks.csv", "latency.png", "memory.png"):
        assert (out / name).stat().st_size > 0
    assert "edge latency: y = " in capsys.readouterr().out


def test_figure_shows_points_fit_and_equation(tmp_path):
    path, _ = synthetic_device(tmp_path)
    calibration = calibrate(read_measured(path), load_summary(PROFILING, PROFILED))
    fig = build_fit_figure(calibration, "latency", settings.style({}))
    artists = {artist.get_gid(): artist for ax in fig.axes for artist in [*ax.get_lines(), *ax.texts, *ax.collections]}
    line = calibration.lines[("edge", "latency")]
    assert f"R² = {line.r2:.3f}, n = 6" in artists["equation:edge"].get_text()
    assert line.equation("ms") in artists["equation:edge"].get_text()
    fit = artists["fit:edge"]
    assert np.allclose(fit.get_ydata(), line.slope * fit.get_xdata() + line.intercept)
    measured = calibration.points[
        (calibration.points["metric"] == "latency") & (calibration.points["model"] == "nasnet")
    ]
    assert list(artists["measured:edge:nasnet"].get_ydata()) == pytest.approx(list(measured["measured"]))
    assert "predicted:edge:ssd_mobilenet" in artists and "interval:edge:ssd_mobilenet" in artists


def test_repeated_rows_are_averaged(tmp_path):
    path = tmp_path / "device.csv"
    write_measured(path, [("inception", 1, "edge", 100), ("inception", 1, "edge", 110), ("nasnet", 1, "edge", 130)])
    measured = read_measured(path).set_index(["device", "model", "batch_size"])
    assert measured.at[("edge", "inception", 1), "latency_ms"] == 105
    assert measured.at[("edge", "inception", 1), "repeats"] == 2


@pytest.mark.parametrize(
    "text, problem, fix",
    [
        ("model,batch_size,latency_ms\ninception,1,100\n", "lacks the column(s) device", "give the columns model, batch_size, device"),
        ("model,batch_size,device,latency_ms\ninception,1,edge,fast\n", "line 2: latency_ms is 'fast'", "plain number"),
        ("model,batch_size,device,latency_ms\ninception,1,edge,100\nnasnet,1,edge,120\n", "device 'edge' (latency) has 2 point(s)",
         "measure at least 3"),
        ("model,batch_size,device,latency_ms\nresnet,1,edge,100\n", "names model(s) 'resnet' with no profiled results",
         "profile those models first"),
        ("model,batch_size,device,latency_ms\ninception,16,edge,100\n", "has no result for inception b16", "batch_sizes"),
        ("model,batch_size,device,latency_ms,peak_memory_mb\ninception,1,edge,100,300\ninception,2,edge,150,\n"
         "nasnet,1,edge,130,\n", "device 'edge' (memory) has peak_memory_mb in 1 row(s)", "leave it empty for all its rows"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_problem_and_the_fix(tmp_path, text, problem, fix):
    path = tmp_path / "device.csv"
    path.write_text(text)
    with pytest.raises(ServeprofError) as raised:
        calibrate(read_measured(path), load_summary(PROFILING, PROFILED))
    assert problem in raised.value.problem and fix in raised.value.fix


def test_the_documented_example_runs_against_the_fixture_run(tmp_path):
    """docs/calibration.md's command, on the report tests' fixture run."""
    shutil.copy(EXAMPLE, tmp_path / "device.csv")
    assert serveprof(["calibrate", "--measured", str(tmp_path / "device.csv"), "--results", str(PROFILING),
                      "--out", str(tmp_path / "out"), "--style", '{"formats": ["png"]}']) == 0  # fmt: skip
    fits = pd.read_csv(tmp_path / "out" / "fits.csv")
    assert sorted(zip(fits["device"], fits["metric"], strict=True)) == [
        ("jetson-nano", "latency"),
        ("jetson-nano", "memory"),
        ("pi4", "latency"),
    ]


def test_a_device_measured_on_the_board_is_fitted_against_its_serveprof_device_profile(tmp_path, capsys):
    """pi4 = 3·edge + 5, where edge (serveprof's device) runs 2× slower than the host: the slope is 3, not 6."""
    edge = tmp_path / "devices" / "edge" / "profiling"
    shutil.copytree(PROFILING, edge)
    for model in PROFILED:
        path = edge / model / "summary.csv"
        frame = pd.read_csv(path)
        frame["mean_ms"] *= 2
        frame.to_csv(path, index=False)
    profile = load_summary(edge, PROFILED).set_index(["model", "batch_size"])
    rows = [(model, batch, "pi4", round(3 * profile.at[(model, batch), "mean_ms"] + 5, 4))
            for model in ("inception", "nasnet") for batch in (1, 2, 4)]  # fmt: skip
    measured = tmp_path / "pi4.csv"
    write_measured(measured, rows)
    out = tmp_path / "out"
    common = ["calibrate", "--measured", str(measured), "--results", str(PROFILING), "--style", '{"formats": ["png"]}']
    assert serveprof([*common, "--device-results", f"edge={edge}", "--profile", "pi4=edge", "--out", str(out)]) == 0
    fits = pd.read_csv(out / "fits.csv").set_index("metric")
    assert fits.at["latency", "profile"] == "edge"
    assert (fits.at["latency", "slope"], fits.at["latency", "intercept"]) == pytest.approx((3.0, 5.0), abs=1e-6)
    assert serveprof([*common, "--out", str(tmp_path / "host")]) == 0
    host_fit = pd.read_csv(tmp_path / "host" / "fits.csv").set_index("metric")
    assert host_fit.at["latency", "profile"] == "host"
    assert host_fit.at["latency", "slope"] == pytest.approx(6.0, abs=1e-6)
    assert serveprof([*common, "--profile", "pi4=edge", "--out", str(out)]) == 1
    assert "--profile names device(s) edge without --device-results" in capsys.readouterr().err

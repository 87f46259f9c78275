"""Figures from the fixture run: the plotted data is the CSV data, read back from the artists."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgb

from serveprof.commands.arguments import load_style
from serveprof.errors import ServeprofError
from serveprof.report import figures
from serveprof.report.numbers import significant
from serveprof.report.results import load_coldstart, load_latencies, load_summary
from serveprof.report.style import LABEL_MAX, PALETTES, display_names, model_looks
from serveprof.settings import style as parse_style
from tests.report_helpers import (
    ALL_MODELS,
    DEFAULT_MODELS,
    PROFILED,
    PROFILING,
    coldstart,
    summary,
    synthetic_coldstart,
    synthetic_summary,
)

STYLE = parse_style({"formats": ["png", "svg"], "dpi": 60})


@pytest.fixture(scope="module")
def frames():
    return load_summary(PROFILING, PROFILED), load_coldstart(PROFILING, PROFILED)


@pytest.fixture(scope="module")
def looks():
    # Colours from ALL configured models, the unavailable one included.
    return model_looks(ALL_MODELS, STYLE)


def artist(fig, gid: str):
    found = fig.findobj(lambda item: item.get_gid() == gid)
    assert len(found) == 1, f"{len(found)} artists with gid {gid!r}"
    return found[0]


def drawn(fig):
    """The figure laid out and drawn, so extents and tick labels are final."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


def tick_labels(axis) -> dict[float, str]:
    """The labelled major ticks inside the view: {value: text}."""
    low, high = sorted(axis.get_view_interval())
    return {tick: label.get_text() for tick, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False)
            if low <= tick <= high and label.get_text()}  # fmt: skip


def luminance(colour: str) -> float:
    channels = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def test_latency_lines_are_the_summary_means_with_a_p50_p99_band(frames, looks):
    fig = figures.build_latency_figure(frames[0], looks, STYLE)
    for model in PROFILED:
        expected = summary(model)
        line = artist(fig, f"mean_ms:{model}")
        np.testing.assert_array_equal(line.get_xdata(), expected["batch_size"])
        np.testing.assert_allclose(line.get_ydata(), expected["mean_ms"], rtol=0, atol=1e-9)
        vertices = artist(fig, f"band:{model}").get_paths()[0].vertices
        for _, row in expected.iterrows():
            at_batch = vertices[np.isclose(vertices[:, 0], row["batch_size"]), 1]
            assert np.isclose(at_batch.min(), row["p50_ms"]) and np.isclose(at_batch.max(), row["p99_ms"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert list(ax.get_xticks()) == [1, 2, 4, 8]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert "(ms)" in ax.get_ylabel() and "batch size" in ax.get_xlabel() and ax.get_title()


def test_cut_short_points_get_open_markers_on_exactly_those_batches(frames, looks):
    fig = figures.build_latency_figure(frames[0], looks, STYLE)
    expected = summary("nasnet")
    cut = expected[expected["truncated"] | expected["low_sample_percentiles"].notna()]
    marker = artist(fig, "cut:nasnet")
    np.testing.assert_array_equal(marker.get_xdata(), cut["batch_size"])
    assert not fig.findobj(lambda item: item.get_gid() == "cut:ssd_mobilenet")  # complete series: no marks


def test_linear_axes_when_the_style_says_so(frames, looks):
    style = parse_style({"log_x": False, "log_y": False})
    fig = figures.build_throughput_figure(frames[0], looks, style)
    assert (fig.axes[0].get_xscale(), fig.axes[0].get_yscale()) == ("linear", "linear")


def test_throughput_lines_are_the_summary_throughput(frames, looks):
    fig = figures.build_throughput_figure(frames[0], looks, STYLE)
    for model in PROFILED:
        line = artist(fig, f"throughput_per_s:{model}")
        np.testing.assert_array_equal(line.get_xdata(), summary(model)["batch_size"])
        np.testing.assert_allclose(line.get_ydata(), summary(model)["throughput_per_s"], atol=1e-9)
    assert "items/s" in fig.axes[0].get_ylabel()


def test_ecdf_steps_are_the_sorted_latencies(frames):
    model = "nasnet"
    rows = load_summary(PROFILING, [model])
    latencies = load_latencies(PROFILING, model, rows["batch_size"])
    fig = figures.build_distribution_figure(model, latencies, rows, STYLE)
    for batch in (1, 2, 4, 8):
        raw = np.loadtxt(PROFILING / model / f"{model}-b{batch}.csv")
        line = artist(fig, f"ecdf:{batch}")
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert line.get_drawstyle() == "steps-post"
        # A leading point at fraction 0, then one step per request.
        np.testing.assert_array_equal(x[1:], np.sort(raw))
        np.testing.assert_allclose(y, np.arange(raw.size + 1) / raw.size)
        assert x[0] == x[1] and y[-1] == 1.0
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "batch 8 (n=6, cut short)" in labels and "batch 1 (n=700)" in labels
    assert fig.axes[0].get_xscale() == "log"


def test_coldstart_bars_are_load_then_first_inference_in_seconds(frames, looks):
    fig = figures.build_coldstart_figure(frames[1], looks, STYLE)
    for model in PROFILED:
        expected = coldstart(model)
        load, first = artist(fig, f"load:{model}"), artist(fig, f"first:{model}")
        assert load.get_x() == 0 and np.isclose(load.get_width(), expected["load_ms"] / 1000)
        assert np.isclose(first.get_x(), expected["load_ms"] / 1000)  # stacked after the load
        assert np.isclose(first.get_width(), expected["first_infer_ms"] / 1000)
    # Each name stands above its bar (no tick labels eat the bars' width), the total at its end.
    assert not [label.get_text() for label in fig.axes[0].get_yticklabels() if label.get_text()]
    for position, model in enumerate(PROFILED):
        name = artist(fig, f"label:{model}")
        assert name.get_text() == looks[model].label and name.xy == (0, position - figures.BAR_HEIGHT / 2)
        expected = coldstart(model)
        total = (expected["load_ms"] + expected["first_infer_ms"]) / 1000
        assert artist(fig, f"total:{model}").get_text() == f"{significant(total)} s"


def test_resources_plot_peak_and_mean_rss_and_cpu(frames, looks):
    fig = figures.build_resources_figure(frames[0], looks, STYLE)
    for model in PROFILED:
        expected = summary(model)
        for gid, column in (("rss_peak", "rss_peak_mb"), ("rss_mean", "rss_mean_mb"), ("cpu_util_pct", "cpu_util_pct")):
            line = artist(fig, f"{gid}:{model}")
            np.testing.assert_array_equal(line.get_xdata(), expected["batch_size"])
            np.testing.assert_allclose(line.get_ydata(), expected[column], atol=1e-9)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2  # no GPU panels without GPU data
    memory, cpu = fig.axes[:2]
    # Sampled in MiB (2^20 bytes), so labelled MiB; CPU in percent of ONE core, 100 marked.
    assert "(MiB)" in memory.get_ylabel() and "MB)" not in memory.get_ylabel()
    assert "% of one core" in cpu.get_ylabel()
    assert list(artist(fig, "one_core").get_ydata()) == [100, 100] and cpu.get_ylim()[1] > 100
    # An open marker means "cut short" in the other figures: the mean RSS line has none.
    assert artist(fig, "rss_mean:nasnet").get_marker() in ("None", "", None)


def test_gpu_panels_appear_when_gpu_was_measured(frames, looks):
    with_gpu = frames[0].copy()
    with_gpu["gpu_util_pct"] = 40.0 + with_gpu["batch_size"]
    with_gpu["gpu_mem_mb"] = 1000.0
    fig = figures.build_resources_figure(with_gpu, looks, STYLE)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    np.testing.assert_allclose(
        artist(fig, "gpu_util_pct:inception").get_ydata(), 40.0 + summary("inception")["batch_size"]
    )
    assert fig.axes[3].get_ylabel() == "GPU memory (MiB)"


def test_a_model_has_one_colour_in_every_figure(frames, looks):
    built = {
        "latency": figures.build_latency_figure(frames[0], looks, STYLE),
        "throughput": figures.build_throughput_figure(frames[0], looks, STYLE),
        "coldstart": figures.build_coldstart_figure(frames[1], looks, STYLE),
        "resources": figures.build_resources_figure(frames[0], looks, STYLE),
    }
    gids = {"latency": "mean_ms", "throughput": "throughput_per_s", "coldstart": "load", "resources": "rss_peak"}
    colours = {}
    for model in PROFILED:
        seen = set()
        for kind, fig in built.items():
            item = artist(fig, f"{gids[kind]}:{model}")
            seen.add(to_hex(item.get_color() if hasattr(item, "get_xdata") else item.get_facecolor()))
        band = artist(built["latency"], f"band:{model}")
        seen.add(to_hex(band.get_facecolor()[0]))
        seen.add(to_hex(artist(built["coldstart"], f"first:{model}").get_facecolor()))
        seen.add(to_hex(artist(built["resources"], f"cpu_util_pct:{model}").get_color()))
        assert len(seen) == 1, (model, seen)
        colours[model] = seen.pop()
    assert len(set(colours.values())) == len(PROFILED)  # and models differ
    # The rank among ALL configured models decides: efficient (unavailable) takes the first colour.
    okabe = PALETTES["okabe_ito"]
    assert colours == {model: okabe[sorted(ALL_MODELS).index(model)].lower() for model in PROFILED}


def test_colours_do_not_shift_when_a_figure_shows_fewer_models(frames):
    everything = model_looks(ALL_MODELS, STYLE)
    only_nasnet = figures.build_latency_figure(frames[0][frames[0]["model"] == "nasnet"], everything, STYLE)
    assert to_hex(artist(only_nasnet, "mean_ms:nasnet").get_color()) == everything["nasnet"].colour.lower()
    many = [f"model_{index}" for index in range(12)]
    looks = model_looks(many, STYLE)
    # Past the palette's eight colours, a repeated colour comes with another line style.
    pairs = {(look.colour, look.linestyle) for look in looks.values()}
    assert len(pairs) == 12


def test_every_okabe_ito_colour_is_visible_on_white():
    # Okabe-Ito's yellow (#F0E442) is 1.3:1 against white; its replacement, Tol's wine, 8.7:1.
    okabe = PALETTES["okabe_ito"]
    contrasts = {colour: 1.05 / (luminance(colour) + 0.05) for colour in okabe}
    assert min(contrasts.values()) >= 2.0, contrasts
    assert "#F0E442" not in okabe and okabe[7] == "#882255" and len(set(okabe)) == 8
    # Eight default models, eight different colours, following the sorted list of all models.
    looks = model_looks(DEFAULT_MODELS, STYLE)
    assert [looks[model].colour for model in sorted(DEFAULT_MODELS)] == list(okabe)


def test_display_names_drop_the_zoo_suffix_and_stay_unique():
    names = display_names(DEFAULT_MODELS)
    assert names["faster_rcnn_inception_resnet_v2_640x640_coco17_tpu-8"] == "faster_rcnn_inception_resnet_v2_640x640"
    assert names["ssd_resnet50_v1_fpn_640x640_coco17_tpu-8"] == "ssd_resnet50_v1_fpn_640x640"
    assert names["nasnet"] == "nasnet" and len(set(names.values())) == len(DEFAULT_MODELS)
    assert all(model.startswith(name) for model, name in names.items())  # a reader finds the key from the label
    # Two keys that would share a name, or a name that is another key, keep their full keys.
    clash = display_names(["ssd_coco17_tpu-8", "ssd_coco17", "ssd", "x_coco17"])
    assert clash == {"ssd_coco17_tpu-8": "ssd_coco17_tpu-8", "ssd_coco17": "ssd_coco17", "ssd": "ssd", "x_coco17": "x"}
    long = display_names(["a" * 30 + "_" + "b" * 30])["a" * 30 + "_" + "b" * 30]
    assert len(long) == LABEL_MAX and long.startswith("a" * 20) and long.endswith("b" * 10) and "…" in long


@pytest.mark.parametrize("kind", ["latency", "throughput", "resources"])
def test_the_default_model_keys_get_a_legend_in_columns_below_the_axes(kind):
    # The issue: with the 52-character zoo keys the legend was one column of 10 rows,
    # 31 % of the figure's height. Now the labels are display names and the columns
    # are measured to fit: at most 5 rows, under a fifth of the height, within the width.
    looks = model_looks(DEFAULT_MODELS, STYLE)
    build = {"latency": figures.build_latency_figure, "throughput": figures.build_throughput_figure,
             "resources": figures.build_resources_figure}[kind]  # fmt: skip
    fig = drawn(build(synthetic_summary(DEFAULT_MODELS), looks, STYLE))
    legend = fig.legends[0]
    texts = [text.get_text() for text in legend.get_texts()]
    assert [looks[model].label for model in DEFAULT_MODELS] == texts[: len(DEFAULT_MODELS)]
    box, page = legend.get_window_extent(), fig.bbox
    assert box.x0 >= page.x0 and box.x1 <= page.x1
    assert box.height / page.height < 0.2, box.height / page.height
    rows = len({round(text.get_window_extent().y0) for text in legend.get_texts()})
    assert rows <= 5
    assert box.y1 <= min(ax.get_window_extent().y0 for ax in fig.axes if ax.get_visible())  # below, not over the data
    # The legend's colours are the lines' colours.
    for handle, model in zip(legend.legend_handles, DEFAULT_MODELS, strict=False):
        assert to_hex(handle.get_color()) == looks[model].colour.lower()


def test_latency_axis_reads_in_seconds_once_latencies_reach_ten_seconds(frames, looks):
    rows = synthetic_summary(DEFAULT_MODELS)
    assert rows["p99_ms"].max() > 60_000
    all_looks = model_looks(DEFAULT_MODELS, STYLE)
    fig = drawn(figures.build_latency_figure(rows, all_looks, STYLE))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "latency per request (s)"
    # The artists keep summary.csv's milliseconds; only the tick labels are in seconds.
    for model in DEFAULT_MODELS:
        np.testing.assert_array_equal(
            artist(fig, f"mean_ms:{model}").get_ydata(), rows[rows["model"] == model]["mean_ms"]
        )
    labels = tick_labels(ax.yaxis)
    assert (
        labels[10_000] == "10"
        and labels[100] == "0.1"
        and not any("e" in text or "×" in text for text in labels.values())
    )
    # Sub-second data keeps milliseconds.
    small = drawn(figures.build_latency_figure(frames[0], looks, STYLE)).axes[0]
    assert small.get_ylabel() == "latency per request (ms)" and tick_labels(small.yaxis)[100] == "100"


def test_distribution_axis_reads_in_seconds_for_slow_models():
    latencies = {1: np.array([2900.0, 3100.0, 3300.0]), 8: np.array([24_000.0, 26_000.0])}
    rows = synthetic_summary(["slow"], batches=(1, 8))
    fig = drawn(
        figures.build_distribution_figure(
            "faster_rcnn_inception_resnet_v2_640x640_coco17_tpu-8", latencies, rows, STYLE
        )
    )
    ax = fig.axes[0]
    assert ax.get_xlabel() == "latency per request (s)"
    np.testing.assert_array_equal(artist(fig, "ecdf:8").get_xdata()[1:], [24_000.0, 26_000.0])
    assert tick_labels(ax.xaxis)[10_000] == "10"
    # The long key gets its own title line instead of running past the edge.
    assert ax.get_title() == "faster_rcnn_inception_resnet_v2_640x640_coco17_tpu-8\nlatency distribution per batch size"
    assert ax.title.get_window_extent().x1 <= fig.bbox.x1


def test_coldstart_bars_use_the_width_the_names_took(looks):
    # Before, the y tick labels took half the width; names above the bars leave it to the bars.
    all_looks = model_looks(DEFAULT_MODELS, STYLE)
    fig = drawn(figures.build_coldstart_figure(synthetic_coldstart(DEFAULT_MODELS), all_looks, STYLE))
    ax = fig.axes[0]
    assert ax.get_position().width > 0.9
    page = fig.bbox
    for model in DEFAULT_MODELS:
        name = artist(fig, f"label:{model}")
        box = name.get_window_extent()
        assert name.get_text() == all_looks[model].label and box.x1 <= page.x1 and ax.bbox.y0 <= box.y0 <= ax.bbox.y1
        assert artist(fig, f"total:{model}").get_window_extent().x1 <= ax.bbox.x1
    names = sorted(
        (artist(fig, f"label:{model}").get_window_extent() for model in DEFAULT_MODELS), key=lambda box: box.y0
    )
    assert all(lower.y1 <= upper.y0 for lower, upper in itertools.pairwise(names))  # no two names overlap


@pytest.mark.parametrize(
    ("value", "scale", "text"),
    [
        (0.03, 1, "0.03"),
        (1.5, 1, "1.5"),
        (5.0, 1, "5"),
        (20, 1, "20"),
        (14_000, 1, "14,000"),
        (60_000, 1000, "60"),
        (300, 1000, "0.3"),
        (0.30000000000000004, 1, "0.3"),
        (123_456, 1, "123,456"),
    ],  # fmt: skip
)
def test_tick_labels_are_plain_short_numbers(value, scale, text):
    assert figures.tick_text(value, scale) == text


def test_titles_that_do_not_fit_break_onto_two_lines():
    assert figures.fitted("short", 500, 12) == "short"
    assert figures.fitted("Memory: peak (solid) and mean (dotted)", 100, 12) == "Memory\npeak (solid) and mean (dotted)"
    assert figures.fitted("batch size (items per request)", 100, 10) == "batch size\n(items per request)"
    assert (
        figures.fitted("Latency (line: mean; band: p50 to p99)", 100, 12) == "Latency\n(line: mean; band: p50 to p99)"
    )
    assert figures.fitted("one two three four", 50, 12) == "one two\nthree four"
    narrow = parse_style({"width_in": 5, "font_size": 11})
    fig = drawn(
        figures.build_resources_figure(
            synthetic_summary(DEFAULT_MODELS[:3]), model_looks(DEFAULT_MODELS, narrow), narrow
        )
    )
    boxes = [ax.title.get_window_extent() for ax in fig.axes[:2]]
    assert boxes[0].x1 <= boxes[1].x0 and boxes[1].x1 <= fig.bbox.x1  # the two panel titles do not collide


def test_style_validation_names_the_problem_and_the_fix():
    with pytest.raises(ServeprofError) as error:
        parse_style({"palette": "rainbow"})
    assert "rainbow" in error.value.problem and all(name in error.value.fix for name in PALETTES)
    with pytest.raises(ServeprofError, match="unknown key.*'colour'"):
        parse_style({"colour": "red"})
    with pytest.raises(ServeprofError, match="plots.dpi"):
        parse_style({"dpi": 10})
    with pytest.raises(ServeprofError, match="plots.formats"):
        parse_style({"formats": ["gif"]})
    with pytest.raises(ServeprofError, match="not valid JSON"):
        load_style("{formats: png}")
    assert load_style(None) == parse_style({}) and parse_style({}).palette == "okabe_ito"


def test_style_comes_from_json_text_or_a_json_file(tmp_path):
    path = tmp_path / "plots.json"
    path.write_text('{"palette": "tol_muted", "log_x": false}')
    from_file, from_text = load_style(str(path)), load_style(path.read_text())
    assert from_file == from_text and from_file.palette == "tol_muted" and from_file.log_x is False
    assert from_file.formats == ("png", "svg") and from_file.dpi == 150  # the schema's defaults fill the rest


def test_save_writes_every_format_and_redraws_identically(frames, looks, tmp_path):
    fig = figures.build_coldstart_figure(frames[1], looks, STYLE)
    first = figures.save_figure(fig, tmp_path / "a" / "coldstart", STYLE)
    assert [path.name for path in first] == ["coldstart.png", "coldstart.svg"]
    assert first[0].read_bytes().startswith(b"\x89PNG") and b"<svg" in first[1].read_bytes()[:500]
    again = figures.save_figure(
        figures.build_coldstart_figure(frames[1], looks, STYLE), tmp_path / "b" / "coldstart", STYLE
    )
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in again]


def run_plot(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serveprof", "plot", *args], capture_output=True, text=True, cwd=cwd)


def test_plot_cli_draws_one_kind_or_one_model_per_job(tmp_path):
    style = '{"formats": ["png", "svg"], "dpi": 60}'
    out = tmp_path / "figures"
    base = ["--results", str(PROFILING), "--style", style, "--out", str(out)]
    done = run_plot(*base, "--models", *PROFILED, "--all-models", *ALL_MODELS, "--only", "latency")
    assert done.returncode == 0, done.stderr
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*.*")) == ["latency.png", "latency.svg"]

    done = run_plot(*base, "--model", "nasnet")
    assert done.returncode == 0, done.stderr
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*.*")) == [
        "latency.png", "latency.svg", "nasnet/distribution.png", "nasnet/distribution.svg"]  # fmt: skip

    refused = run_plot(*base, "--model", "nasnet", "--only", "latency")
    assert refused.returncode == 1 and "--model nasnet draws per-model figures" in refused.stderr
    unknown = run_plot(*base, "--models", "nasnet", "--only", "latency,violin")
    assert unknown.returncode == 1 and "'violin'" in unknown.stderr and "distribution" in unknown.stderr
    palette = run_plot(
        "--results", str(PROFILING), "--out", str(out), "--models", "nasnet", "--style", '{"palette": "jet"}'
    )
    assert palette.returncode == 1 and "okabe_ito" in palette.stderr


def test_plot_cli_draws_everything_by_default_and_names_a_missing_latency_file(tmp_path):
    import shutil

    done = run_plot(
        "--results", str(PROFILING), "--models", *PROFILED, "--out", str(tmp_path / "all"), "--style", '{"dpi": 60}'
    )
    assert done.returncode == 0, done.stderr
    names = sorted(path.relative_to(tmp_path / "all").as_posix() for path in (tmp_path / "all").rglob("*.png"))
    assert names == sorted(
        [f"{kind}.png" for kind in figures.OVERVIEW_KINDS] + [f"{m}/distribution.png" for m in PROFILED]
    )

    results = tmp_path / "profiling"
    shutil.copytree(PROFILING, results)
    (results / "nasnet" / "nasnet-b4.csv").unlink()
    failed = run_plot("--results", str(results), "--model", "nasnet", "--out", str(tmp_path / "x"))
    assert failed.returncode == 1 and "nasnet-b4.csv does not exist" in failed.stderr
    assert not (tmp_path / "x" / "nasnet").exists()


def test_plotting_never_imports_tensorflow():
    code = "import sys, serveprof.commands.plot, serveprof.commands.tables; print('tensorflow' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_plot_cli_with_the_config_draws_what_the_workflow_draws(tmp_path):
    import yaml

    config = tmp_path / "config.yaml"
    plots = {"formats": ["png"], "dpi": 60, "palette": "tol_bright"}
    config.write_text(
        yaml.safe_dump(
            {
                "models": {
                    model: {"source": "keras", "type": "classification", "application": "X"} for model in ALL_MODELS
                },
                "plots": plots,
            },
            sort_keys=False,
        )
    )
    by_config, by_flags = tmp_path / "by_config", tmp_path / "by_flags"
    done = run_plot("--config", str(config), "--results", str(PROFILING), "--out", str(by_config))
    assert done.returncode == 0, done.stderr
    in_config_order = [model for model in ALL_MODELS if model in PROFILED]  # as the workflow passes them
    done = run_plot(
        "--results",
        str(PROFILING),
        "--models",
        *in_config_order,
        "--all-models",
        *ALL_MODELS,
        "--style",
        json.dumps(plots),
        "--out",
        str(by_flags),
    )
    assert done.returncode == 0, done.stderr
    # The same files, byte for byte: the profiled models (those with results), the colour
    # order of every configured model, and the config's style.
    names = sorted(path.relative_to(by_flags).as_posix() for path in by_flags.rglob("*.png"))
    assert names == sorted(path.relative_to(by_config).as_posix() for path in by_config.rglob("*.png"))
    assert all((by_config / name).read_bytes() == (by_flags / name).read_bytes() for name in names)
    assert {name.split("/")[0] for name in names if "/" in name} == set(PROFILED)

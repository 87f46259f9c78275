"""Load points on a real ``serveprof serve`` (the session's tiny classifier), and the load: block's checks.

Each point runs the real ``serveprof load`` command against the running server, in
short windows: closed-loop throughput rises with the clients while the two cores are
not yet busy, and an open-loop rate above what the server answers shows latency
growing from each request's scheduled time (no coordinated omission). A bad load:
block is refused, naming the key, before Snakemake lists a job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from serveprof.errors import ServeprofError
from serveprof.load.scenarios import points
from serveprof.settings import check as check_config
from serveprof.settings import load as load_settings
from tests.fixtures.embedded_server import TINY_MODEL_NAME, running_server
from tests.workflow_runner import REPO, run_workflow

BIN = Path(sys.executable).parent
SHORT = {"window_s": 0.5, "stable_windows": 3, "max_windows": 4, "warmup_s": 0.3}
KERAS = {"source": "keras", "type": "classification", "application": "MobileNetV2"}


def run_point(server, tmp_path: Path, scenario: str, point: str, **load) -> tuple[dict, pd.DataFrame]:
    requests, summary = tmp_path / f"{scenario}-{point}.csv", tmp_path / f"{scenario}-{point}.json"
    result = subprocess.run(
        [
            str(BIN / "serveprof"),
            "load",
            "--model",
            "tiny",
            "--scenario",
            scenario,
            "--point",
            point,
            "--address",
            server.grpc_target,
            "--pid",
            str(server.pid),
            "--load",
            json.dumps({**SHORT, **load}),
            "--requests-out",
            str(requests),
            "--summary-out",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(summary.read_text()), pd.read_csv(requests)


@pytest.fixture(scope="module")
def compute_server(tmp_path_factory):
    """A server whose requests are milliseconds of TensorFlow work, one core each (intra-op 1), two at
    once (inter-op 2: with 1, concurrent Session runs take turns).

    On the tiny classifier the server's Python is the bottleneck at one client already
    (measured 2,805/s at 1 client, 2,483/s at 4), so no concurrency can raise its throughput.
    """
    base = tmp_path_factory.mktemp("compute") / TINY_MODEL_NAME
    export = "import sys; from tests.fixtures.tiny_models import export_cpu_bound_model as e; e(sys.argv[1], 1024, 8)"
    subprocess.run([sys.executable, "-c", export, str(base / "1")], check=True, cwd=REPO, capture_output=True)
    one_core = ("--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2")
    with running_server(base, *one_core, log_dir=tmp_path_factory.mktemp("compute_log")) as server:
        yield server


def test_closed_loop_throughput_rises_with_concurrency(compute_server, tmp_path):
    # Two cores: at most 2x; 1.2x leaves room for a shared machine. A second pair is measured only if the first
    # falls short, since another process can take a core for one point's seconds.
    for attempt in range(2):
        (folder := tmp_path / f"pair{attempt}").mkdir()
        one, rows_one = run_point(compute_server, folder, "closed", "c1", batch_size=4)
        four, rows_four = run_point(compute_server, folder, "closed", "c4", batch_size=4)
        if four["stats"]["throughput_per_s"] > 1.2 * one["stats"]["throughput_per_s"]:
            break
    assert four["stats"]["throughput_per_s"] > 1.2 * one["stats"]["throughput_per_s"], (one["stats"], four["stats"])
    for document, rows in ((one, rows_one), (four, rows_four)):
        assert document["stats"]["errors"] == {} and set(rows["status"]) == {"OK"}
        assert 3 <= document["windows_measured"] <= 4
        # Closed loop: each request is sent when it is due, and its latency runs from then.
        assert (rows["latency_ms"] - (rows["done_ms"] - rows["scheduled_ms"])).abs().max() < 1e-3
    assert four["concurrency"] == 4 and four["generator"]["connections"] == 4


def test_open_loop_above_capacity_shows_latency_growing_from_the_scheduled_times(embedded_server, tmp_path):
    capacity, _ = run_point(embedded_server, tmp_path, "closed", "c4", max_windows=3)
    rate = round(3 * capacity["stats"]["throughput_per_s"])
    document, rows = run_point(
        embedded_server,
        tmp_path,
        "open",
        f"r{rate}",
        arrival="constant",
        max_in_flight=4,
        warmup_s=0,
        max_windows=3,
    )
    windows = document["windows"]
    assert document["target_rate_per_s"] == rate
    assert document["schedule"]["achieved_rate_per_s"] < 0.8 * rate, document["schedule"]
    # Requests waited for a free connection (the server was behind), not on the generator.
    assert document["schedule"]["queued_pct"] > 50, document["schedule"]
    # The backlog grows window by window, and the latency counts it: it is not reset at each send.
    assert windows[-1]["p50_ms"] > 2 * windows[0]["p50_ms"], windows
    ok = rows[rows["status"] == "OK"]
    waited = ok["sent_ms"] - ok["scheduled_ms"]
    assert waited.max() > 10 * (ok["done_ms"] - ok["sent_ms"]).median(), waited.describe()
    assert (ok["latency_ms"] - (ok["done_ms"] - ok["scheduled_ms"])).abs().max() < 1e-3


# ------------------------------------------------------------------ the load: block


def config_with(**load) -> dict:
    return {"models": {"m": dict(KERAS)}, "batch_sizes": [1], "load": load}


@pytest.mark.parametrize(
    ("load", "key", "words"),
    [
        ({"concurrency": [0]}, "load.concurrency", "1 or more"),
        ({"concurrency": [1], "stable_windows": 3, "max_windows": 2}, "load.max_windows", "3 or more"),
        ({"request_rate": [-5]}, "load.request_rate", "above 0"),
        ({"concurrency": [1], "batching": {"allowed_batch_sizes": [[4, 2]]}}, "allowed_batch_sizes", "increasing"),
        ({"concurrency": [1], "batching": {"max_batch_size": [8], "allowed_batch_sizes": [[2, 4]]}}, "[0]", "end"),
        ({"concurrency": [4], "batch_size": 8, "batching": {"max_batch_size": [4]}}, "max_batch_size", "refused"),
        ({"concurrency": [1], "models": ["other"]}, "load.models[0]", "not a configured model"),
        ({"concurency": [1]}, "load", "concurrency"),
    ],
)
def test_a_bad_load_block_is_refused_naming_the_key(load, key, words):
    with pytest.raises(ServeprofError) as caught:
        check_config(config_with(**load))
    assert key in str(caught.value) and words in str(caught.value), str(caught.value)


def test_the_load_block_is_off_by_default_and_names_one_job_per_point():
    assert load_settings(config_with()).load_models() == []
    loaded = load_settings(
        config_with(
            concurrency=[1, 4], request_rate=[12.5], batching={"max_batch_size": [8], "batch_timeout_micros": [0, 500]}
        )
    )
    names = [(point.scenario, point.point) for point in loaded.load_points("m")]
    labels = ("", "-mbs8-t0", "-mbs8-t500")
    assert names == [
        pair
        for label in labels
        for pair in ((f"closed{label}", "c1"), (f"closed{label}", "c4"), (f"open{label}", "r12.5"))
    ]
    assert points(loaded.load(), None)[-1].batching == {"max_batch_size": 8, "batch_timeout_micros": 500}


def test_snakemake_refuses_a_bad_load_block_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["load"] = {"concurrency": [1, 2], "stable_windows": 4, "max_windows": 3}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_workflow(tmp_path, "-n", target=None, timeout=300)
    assert run.returncode != 0 and run.jobs == [], run.output[-3000:]
    assert "load.max_windows" in run.output and "4 or more" in run.output, run.output[-3000:]
    assert not (tmp_path / "workload").exists()


def test_heatmap_labels_contrast_with_their_cells():
    """Every cell label of the batching heatmap is black or white, whichever reads on that cell (4.5:1 or better)."""
    from matplotlib.colors import to_rgba

    from serveprof.load.figures import build_heatmap, relative_luminance
    from serveprof.settings import style

    rows, documents = [], {}
    for mbs, timeout in [(mbs, timeout) for mbs in (2, 4, 8) for timeout in (0, 500, 2000)]:
        scenario = f"closed-mbs{mbs}-t{timeout}"
        documents[scenario] = {"batching": {"max_batch_size": mbs, "batch_timeout_micros": timeout}}
        rows.append({"scenario": scenario, "mode": "closed", "batching": scenario[7:], "concurrency": 8,
                     "throughput_per_s": 100.0 * mbs + timeout / 10, "p99_ms": 2.0 + timeout / 100 + 16 / mbs})  # fmt: skip
    fig = build_heatmap("tiny", pd.DataFrame(rows), documents, style({"formats": ["png"], "dpi": 60}))
    labels = 0
    for ax in fig.axes:
        if not ax.images:
            continue  # a colour bar
        image = ax.images[0]
        cells = image.get_array()
        for text in ax.texts:
            column, row = (round(c) for c in text.get_position())
            cell = relative_luminance(image.cmap(image.norm(cells[row, column])))
            ink = relative_luminance(to_rgba(text.get_color()))
            assert (max(cell, ink) + 0.05) / (min(cell, ink) + 0.05) >= 4.5, (text.get_text(), text.get_color())
            labels += 1
    assert labels == 18
    assert {text.get_color() for ax in fig.axes for text in ax.texts} == {"black", "white"}

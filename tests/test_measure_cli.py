"""``serveprof measure`` and ``serveprof coldstart`` end to end: real launched servers, real gRPC and REST.

Every test runs the CLI as a subprocess against the embedded server on the tiny
classifier (input ``images`` float32 [None, 8, 8, 3]) and checks the files it writes
byte for byte where the format is fixed.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from serveprof.measure.resources import detect_gpu_probe
from serveprof.measure.result_files import COLDSTART_COLUMNS
from serveprof.measure.stats import latency_stats
from tests.fixtures.embedded_server import REPO, TINY_MODEL_NAME, server_env

MODEL = TINY_MODEL_NAME
SERVER = json.dumps({"backend": "embedded", "startup_timeout_s": 180})
LATENCY_LINE = re.compile(r"^\d+\.\d{4}$")
RUN_TIMEOUT_S = 400  # each batch size launches a server (TensorFlow's import is slow on a shared machine)


def serveprof(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serveprof", *args],
        cwd=cwd,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def launch_args(base: Path) -> list[str]:
    return ["--model", MODEL, "--model-base-path", str(base), "--server", SERVER]


def read_results(out: Path, batch: int) -> tuple[list[str], dict]:
    lines = (out / f"{MODEL}-b{batch}.csv").read_text().splitlines()
    return lines, json.loads((out / "stats" / f"b{batch}.json").read_text())


def check_series(lines: list[str], stats: dict, batch: int) -> None:
    """The latency file and the stats agree: one line per request, 4 decimals, all positive."""
    assert len(lines) == stats["stats"]["count"]
    assert all(LATENCY_LINE.match(line) for line in lines), lines[:5]
    latencies = [float(line) for line in lines]
    assert all(value > 0 for value in latencies)
    recomputed = latency_stats(latencies, batch)
    # The file holds 4 decimals, the stats full precision.
    assert recomputed["mean_ms"] == pytest.approx(stats["stats"]["mean_ms"], abs=1e-4)
    assert recomputed["p50_ms"] == pytest.approx(stats["stats"]["p50_ms"], abs=1e-4)


def test_grpc_at_batch_1_and_3_each_on_a_fresh_server(tiny_classifier_base, tmp_path):
    out = tmp_path / "profiling"
    done = serveprof(
        "measure",
        *launch_args(tiny_classifier_base),
        "--batch-size",
        "1",
        "--batch-size",
        "3",
        "--requests",
        "20",
        "--warmup-requests",
        "2",
        "--input",
        '{"kind": "random", "seed": 5}',
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    pids = set()
    for batch in (1, 3):
        lines, stats = read_results(out, batch)
        assert len(lines) == 20
        check_series(lines, stats, batch)
        assert (stats["model"], stats["batch_size"], stats["protocol"], stats["transport"]) == (
            MODEL,
            batch,
            "grpc",
            "builtin",
        )
        assert stats["first_init_ms"] > 0 and stats["first_aot_ms"] > 0
        assert (stats["warmup_requests"], stats["requests_target"]) == (2, 20)
        assert (stats["truncated"], stats["truncated_reason"]) == (False, None)
        assert stats["stats"]["low_sample_percentiles"] == ["p90", "p95", "p99"]
        assert stats["input"]["shapes"] == {"images": [batch, 8, 8, 3]}
        assert (stats["input"]["kind"], stats["input"]["seed"]) == ("random", 5)
        assert stats["model_freshly_loaded"] is True
        assert stats["server"]["backend"] == "embedded"
        resources = stats["resources"]
        assert resources["samples"] >= 1
        assert resources["rss_peak_mb"] > 100  # a server that has imported TensorFlow
        # 20 batch-1 requests of the tiny model, run as Session runs, can take less CPU than one
        # clock tick (10 ms), which is what the kernel counts in: zero is a valid reading here.
        assert resources["cpu_util_pct"] is not None and resources["cpu_util_pct"] >= 0
        gpu = detect_gpu_probe()  # the CLI reads the GPU the same way: device-wide, whoever uses it
        if gpu is None:
            assert (resources["gpu_util_pct"], resources["gpu_mem_mb"], stats["provenance"]["gpu"]) == (
                None,
                None,
                None,
            )
        else:
            assert 0 <= resources["gpu_util_pct"] <= 100 and resources["gpu_mem_mb"] > 0
            assert stats["provenance"]["gpu"] == "; ".join(gpu.names())
        # server.gpu is false: the embedded server was given no GPU, whatever the machine has.
        assert (stats["server"]["gpu_requested"], stats["server"]["gpu_used"]) == (False, False)
        assert stats["server"]["tensorflow_version"] == importlib.metadata.version("tensorflow")
        assert stats["provenance"]["cpu_count"] == os.cpu_count()
        assert stats["started_at"] <= stats["finished_at"]
        pids.add(stats["server"]["pid"])
    assert len(pids) == 2, "each batch size must get a freshly launched server"
    assert not list(out.rglob("*.tmp"))

    aggregated = serveprof(
        "aggregate",
        "--model",
        MODEL,
        "--stats",
        str(out / "stats" / "b3.json"),
        str(out / "stats" / "b1.json"),
        "--acquired",
        str(write_acquired(tmp_path)),
        "--config-hash",
        "abc",
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert aggregated.returncode == 0, aggregated.stderr
    durations = (out / f"{MODEL}.csv").read_bytes()
    assert durations.startswith(b"batch_size, duration\n")
    assert re.fullmatch(rb"batch_size, duration\n1, \d+\.\d{4}\n3, \d+\.\d{4}\n", durations)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["backend_version"] == stats["server"]["version"]
    assert provenance["tensorflow_version"] == importlib.metadata.version("tensorflow")
    assert (provenance["gpu_used"], provenance["image"], provenance["image_digest"], provenance["server_notes"]) == (
        False,
        None,
        None,
        None,
    )


def write_acquired(folder: Path) -> Path:
    path = folder / "acquired.json"
    path.write_text(json.dumps({"model": MODEL, "status": "ok", "source": "saved_model", "weights": "saved_model"}))
    return path


def test_rest_protocol_through_requests(tiny_classifier_base, tmp_path):
    done = serveprof(
        "measure",
        *launch_args(tiny_classifier_base),
        "--batch-size",
        "2",
        "--protocol",
        "rest",
        "--transport",
        "library",
        "--requests",
        "15",
        "--warmup-requests",
        "1",
        "--input",
        '{"kind": "zeros"}',
        "--latencies",
        str(tmp_path / "lat.csv"),
        "--stats",
        str(tmp_path / "b2.json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = (tmp_path / "lat.csv").read_text().splitlines()
    stats = json.loads((tmp_path / "b2.json").read_text())
    check_series(lines, stats, 2)
    assert len(lines) == 15
    assert (stats["protocol"], stats["transport"]) == ("rest", "library")
    assert "over rest (library transport)" in done.stderr
    assert stats["input"]["shapes"] == {"images": [2, 8, 8, 3]}


def test_time_cap_truncates_but_keeps_the_minimum(tiny_classifier_base, tmp_path):
    out = tmp_path / "profiling"
    done = serveprof(
        "measure",
        *launch_args(tiny_classifier_base),
        "--batch-size",
        "1",
        "--requests",
        "100000",
        "--max-seconds",
        "0.001",
        "--min-requests",
        "4",
        "--warmup-max-seconds",
        "0",
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines, stats = read_results(out, 1)
    check_series(lines, stats, 1)
    assert 4 <= stats["stats"]["count"] < 100000
    assert stats["truncated"] is True
    assert stats["truncated_reason"] == f"max_seconds (0.001 s) reached after {stats['stats']['count']} requests"
    assert stats["warmup_requests"] == 0  # a warm-up cap of 0 s sends none
    # No --input: the config's default, kind auto, which the served signature (a classifier's) resolves.
    assert stats["input"]["kind"] == "random" and stats["input"]["seed"] == 0
    assert (stats["input"]["requested_kind"], stats["input"]["model_type"], stats["input"]["model_type_from"]) == (
        "auto",
        "classification",
        "signature",
    )


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_against_a_running_server(embedded_server, tmp_path, protocol):
    # --address is HOST:PORT for both: the gRPC port, or the REST port with --protocol rest.
    address = embedded_server.grpc_target if protocol == "grpc" else embedded_server.rest_url.removeprefix("http://")
    out = tmp_path / "profiling"
    done = serveprof(
        "measure",
        "--model",
        MODEL,
        "--address",
        address,
        "--protocol",
        protocol,
        "--pid",
        str(embedded_server.pid),
        "--batch-size",
        "2",
        "--requests",
        "10",
        # The session's server serves no metrics page: asking for one must not fail the measurement.
        *(["--metrics-url", f"{embedded_server.rest_url}/monitoring/prometheus/metrics"] if protocol == "rest" else []),
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines, stats = read_results(out, 2)
    check_series(lines, stats, 2)
    assert stats["protocol"] == protocol
    server_latency = stats["server_latency"]
    assert server_latency["count"] is None and server_latency["mean_ms"] is None
    expected = "reading http://" if protocol == "rest" else "the server serves no metrics page"
    assert server_latency["reason"].startswith(expected), server_latency
    # With --pid the server's CPU is ours, so the foreign-CPU check stays on.
    assert stats["disturbance"]["limits"]["max_foreign_cpu_pct"] == 25 and stats["disturbance"]["attempts"] == 1
    assert stats["model_freshly_loaded"] is False
    assert (stats["server"]["backend"], stats["server"]["address"]) == ("external", address)
    assert stats["resources"]["rss_peak_mb"] > 100  # sampled through --pid


def test_server_killed_mid_measurement_fails_fast_and_leaves_nothing(tiny_classifier_base, tmp_path):
    out = tmp_path / "profiling"
    command = [
        sys.executable,
        "-m",
        "serveprof",
        "measure",
        *launch_args(tiny_classifier_base),
        "--batch-size",
        "1",
        "--requests",
        "10000000",
        "--max-seconds",
        "600",
        "--out-dir",
        str(out),
    ]
    measure = subprocess.Popen(
        command, cwd=tmp_path, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        stderr = []
        for line in measure.stderr:  # the protocol logs each step; wait until the timed loop runs
            stderr.append(line)
            if "timing up to" in line:
                break
        servers = [
            child
            for child in psutil.Process(measure.pid).children(recursive=True)
            if "serveprof serve" in " ".join(child.cmdline())
        ]
        assert servers, "".join(stderr)
        time.sleep(1)
        killed_at = time.monotonic()
        for server in servers:
            server.kill()
        returncode = measure.wait(timeout=60)
        took = time.monotonic() - killed_at
        stderr.append(measure.stderr.read())
    finally:
        if measure.poll() is None:
            measure.kill()
            measure.wait()
    text = "".join(stderr)
    assert returncode == 1, text[-4000:]
    assert took < 30, f"took {took:.1f} s to notice the server died"
    assert "Traceback" not in text
    assert "serveprof-serve]" in text, "the error must quote the server's log"  # the embedded server's log prefix
    assert not (out / f"{MODEL}-b1.csv").exists() and not (out / "stats" / "b1.json").exists()
    assert not out.exists() or not [path for path in out.rglob("*") if path.is_file()], (
        "no result and no temporary file"
    )


@pytest.mark.parametrize(
    "client", [[], ["--protocol", "rest", "--transport", "library"]], ids=["grpc-builtin", "rest-library"]
)
def test_coldstart(tiny_classifier_base, tmp_path, client):
    out = tmp_path / "coldstart.csv"
    base, warmup_records = tiny_classifier_base, 0
    if client:  # the second case serves a copy with warm-up records for batch sizes 1 and 2
        from tests.test_server_batching import write_warmup

        base, warmup_records = tmp_path / MODEL, 2
        shutil.copytree(tiny_classifier_base, base)
        write_warmup(base / "1", 1, 2)
    done = serveprof(
        "coldstart",
        *launch_args(base),
        "--input",
        '{"kind": "random"}',
        *client,
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 1
    row = rows[0]
    # The documented columns come first, as before; the load split and the disturbance follow.
    assert list(row)[:5] == ["model", "load_ms", "first_infer_ms", "backend", "backend_version"]
    assert list(row) == list(COLDSTART_COLUMNS)
    assert row["model"] == MODEL and row["backend"] == "embedded" and row["backend_version"]
    load_ms, first_infer_ms = float(row["load_ms"]), float(row["first_infer_ms"])
    assert load_ms > first_infer_ms > 0  # loading TensorFlow and the model dwarfs one tiny request
    # The server's own SavedModel load is part of the launcher's load, which also holds TensorFlow's import.
    assert 0 < float(row["server_load_ms"]) < load_ms
    # The server replayed the warm-up records before AVAILABLE, inside the load; without any, no warm-up.
    assert int(row["warmup_records"]) == warmup_records
    assert (float(row["warmup_ms"]) > 0) == bool(warmup_records)
    assert float(row["server_load_ms"]) + float(row["warmup_ms"]) < load_ms
    assert row["disturbed"] in ("true", "false") and float(row["foreign_cpu_pct"]) >= 0
    assert row["attempts"] == "1"  # measure.retry_disturbed defaults to 0


def test_bad_invocations_are_clear_errors(tiny_classifier_base, tmp_path):
    neither = serveprof("measure", "--model", MODEL, "--batch-size", "1", cwd=tmp_path)
    assert neither.returncode == 1 and "either --address" in neither.stderr
    several = serveprof(
        "measure",
        *launch_args(tiny_classifier_base),
        "--batch-size",
        "1",
        "--batch-size",
        "2",
        "--latencies",
        "x.csv",
        cwd=tmp_path,
    )
    assert several.returncode == 1 and "use --out-dir" in several.stderr
    bad_server = serveprof(
        "measure",
        "--model",
        MODEL,
        "--model-base-path",
        str(tiny_classifier_base),
        "--server",
        "{backend",
        "--batch-size",
        "1",
        cwd=tmp_path,
    )
    assert bad_server.returncode == 1 and "--server is not valid JSON" in bad_server.stderr
    for done in (neither, several, bad_server):
        assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def zoo_detector_base(tmp_path_factory) -> Path:
    """The zoo-shaped detector (uint8 [1, None, None, 3]) in TF Serving's layout, exported in a subprocess."""
    base = tmp_path_factory.mktemp("detector") / "detector"
    code = "import sys; from tests.fixtures.tiny_models import export_zoo_style_detector; export_zoo_style_detector(sys.argv[1])"
    subprocess.run(
        [sys.executable, "-c", code, str(base / "1")],
        check=True,
        cwd=REPO,
        env=server_env(),
        timeout=300,
        capture_output=True,
    )
    return base


def test_detector_gets_photos_of_its_signature_and_refuses_a_larger_batch(zoo_detector_base, tmp_path):
    # No kind given: auto, and the signature's detection outputs make it photos.
    args = [
        "--model",
        "detector",
        "--model-base-path",
        str(zoo_detector_base),
        "--server",
        SERVER,
        "--input",
        '{"image_size": [48, 64]}',
        "--requests",
        "5",
        "--out-dir",
        str(tmp_path),
    ]
    done = serveprof("measure", *args, "--batch-size", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    stats = json.loads((tmp_path / "stats" / "b1.json").read_text())
    assert stats["input"]["kind"] == "images"
    assert (stats["input"]["model_type"], stats["input"]["model_type_from"]) == ("detection", "signature")
    assert stats["input"]["shapes"] == {"input_tensor": [1, 48, 64, 3]}  # the free height/width took image_size
    assert stats["input"]["dtypes"] == {"input_tensor": "uint8"}
    assert stats["input"]["images"][0] == "skimage.data.astronaut"

    refused = serveprof("measure", *args, "--batch-size", "2", cwd=tmp_path)
    assert refused.returncode == 1
    assert "fixed batch dimension of 1" in refused.stderr and "batch_sizes to [1]" in refused.stderr
    assert not (tmp_path / "stats" / "b2.json").exists()


def test_type_flag_resolves_auto_and_free_dimensions_default_to_512(zoo_detector_base, tmp_path):
    """Neither --input nor an image size: --type decides the kind, and the free height/width are 512 x 512."""
    done = serveprof(
        "measure",
        "--model",
        "detector",
        "--model-base-path",
        str(zoo_detector_base),
        "--server",
        SERVER,
        "--type",
        "classification",
        "--batch-size",
        "1",
        "--requests",
        "2",
        "--warmup-requests",
        "0",
        "--out-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    stats = json.loads((tmp_path / "stats" / "b1.json").read_text())
    assert (stats["input"]["kind"], stats["input"]["model_type"], stats["input"]["model_type_from"]) == (
        "random",
        "classification",
        "--type",
    )
    assert stats["input"]["shapes"] == {"input_tensor": [1, 512, 512, 3]}
    assert stats["input"]["image_size"] == [512, 512]

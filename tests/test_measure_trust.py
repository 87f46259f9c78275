"""Trusting a series: disturbance flagged and re-measured, client and server on separate cores, the
server's own latency beside the client's, and the report marking what stayed disturbed (issues 17, 11).

One real measurement (a tiny model on the embedded server, a busy loop started here) carries the
end-to-end checks; the retry policy and the pinning are checked on their own, on real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from serveprof.errors import ServeprofError
from serveprof.measure.placement import pinned
from serveprof.measure.retry import DisturbanceSettings, retried
from tests.test_measure_cli import MODEL, launch_args, serveprof

BUSY_LOOP = "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end: pass\n"
TWO_CPUS = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to place client and server apart"
)


@pytest.fixture
def busy_loop():
    """A process burning one core (bounded to 300 s), killed by its id afterwards."""
    process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


@TWO_CPUS
def test_a_disturbed_series_is_flagged_measured_again_and_marked_in_the_report(
    tiny_classifier_base, tmp_path, busy_loop
):
    out = tmp_path / "profiling" / MODEL
    server = json.loads(launch_args(tiny_classifier_base)[-1])
    args = launch_args(tiny_classifier_base)[:-1] + [json.dumps({**server, "tensor_content": True})]
    done = serveprof(
        "measure",
        *args,
        "--batch-size",
        "2",
        # Timed for about 2 s, so the sampler sees the busy loop over several intervals.
        "--requests",
        "100000",
        "--max-seconds",
        "2",
        "--min-requests",
        "10",
        "--warmup-requests",
        "2",
        "--retry-disturbed",
        "1",
        "--retry-pause",
        "0",
        "--client-cpus",
        "0",
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert busy_loop.poll() is None, "the busy loop must outlive the measurement"
    stats = json.loads((out / "stats" / "b2.json").read_text())
    lines = (out / f"{MODEL}-b2.csv").read_text().splitlines()
    assert len(lines) == stats["stats"]["count"] >= 10  # the latency file's contract is unchanged

    disturbance = stats["disturbance"]
    assert disturbance["flagged"] is True
    assert disturbance["foreign_cpu_pct"] > 25  # the default measure.max_foreign_cpu_pct
    assert any(reason.startswith("other processes used") for reason in disturbance["reasons"])
    assert busy_loop.pid in [entry["pid"] for entry in disturbance["top_foreign"]]
    # Both attempts ran beside the busy loop: the kept one is the least disturbed, the other is listed.
    assert disturbance["attempts"] == 2 and disturbance["kept_attempt"] in (1, 2)
    assert [entry["attempt"] for entry in disturbance["discarded"]] == [3 - disturbance["kept_attempt"]]
    assert disturbance["discarded"][0]["flagged"] is True
    assert disturbance["discarded"][0]["foreign_cpu_pct"] >= disturbance["foreign_cpu_pct"]
    assert "measuring again on a fresh server (attempt 2 of 2)" in done.stderr
    assert "still disturbed after 2 attempts" in done.stderr

    # measure.client_cpus: the client on CPU 0, the server on the CPUs it had, less that one.
    expected_server = sorted(os.sched_getaffinity(0) - {0})
    assert stats["placement"] == {"client_cpus": [0], "server_cpus": expected_server, "note": None}

    # server.tensor_content: the flag TF Serving reads, and the serialisation recorded.
    assert "--enable_serialization_as_tensor_content=true" in stats["server"]["command"]
    assert stats["server"]["serialization"] == "tensor_content"

    # The server's own latency of exactly the timed requests, from its Prometheus page.
    server_latency = stats["server_latency"]
    assert server_latency["reason"] is None
    assert server_latency["count"] == stats["stats"]["count"]
    assert 0 < server_latency["mean_ms"] < stats["stats"]["mean_ms"]  # the client's adds the transport
    assert server_latency["p50_ms"] > 0 and server_latency["p99_ms"] >= server_latency["p50_ms"]

    # Aggregated and reported: <model>.csv as before, the side files and the report carry the flag.
    (out / "coldstart.csv").write_text(  # as written before the load split: still read
        f"model,load_ms,first_infer_ms,backend,backend_version\n{MODEL},5000,40,embedded,x\n"
    )
    acquired = tmp_path / "acquired"
    acquired.mkdir()
    (acquired / f"{MODEL}.json").write_text(
        json.dumps({"model": MODEL, "status": "ok", "source": "saved_model", "weights": "saved_model"})
    )
    done = serveprof(
        "aggregate",
        "--model",
        MODEL,
        "--stats",
        str(out / "stats" / "b2.json"),
        "--coldstart",
        str(out / "coldstart.csv"),
        "--acquired",
        str(acquired / f"{MODEL}.json"),
        "--config-hash",
        "0123456789abcdef",
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    durations = (out / f"{MODEL}.csv").read_text().splitlines()
    assert durations[0] == "batch_size, duration" and durations[1].startswith("2, ")

    from serveprof.report.results import load_run
    from serveprof.report.tables import DISTURBED, DISTURBED_NOTE, result_tables

    run = load_run(tmp_path / "profiling", acquired, [MODEL])
    row = run.summary.iloc[0]
    assert bool(row["disturbed"]) and row["attempts"] == 2 and row["serialization"] == "tensor_content"
    tables = {table.name: table for table in result_tables(run)}
    percentiles = tables["percentiles"]
    assert percentiles.rows[0][1] == f"2{DISTURBED}"
    assert any(note.startswith(DISTURBED_NOTE) for note in percentiles.notes)
    assert "other processes used" in percentiles.data.loc[0, "disturbance_reasons"]
    server_table = tables["server_latency"]
    assert server_table.data.loc[0, "server_count"] == stats["stats"]["count"]
    assert 0 < server_table.data.loc[0, "client_share_pct"] < 100
    coldstart = tables["coldstart"]
    assert not coldstart.rows[0][2].endswith(DISTURBED) and not coldstart.data.loc[0, "disturbed"]


def record(flagged: bool, foreign: float) -> dict:
    return {"flagged": flagged, "reasons": ["busy"] if flagged else [], "foreign_cpu_pct": foreign, "steal_pct": 0.0}


@pytest.mark.parametrize(
    ("records", "retries", "kept", "attempts"),
    [
        ([record(False, 3.0)], 2, 1, 1),  # quiet at once: no retry
        ([record(True, 90.0), record(False, 5.0), record(False, 1.0)], 2, 2, 2),  # the first quiet one is kept
        ([record(True, 90.0), record(True, 40.0), record(True, 70.0)], 2, 2, 3),  # all disturbed: the least
        ([record(True, 90.0), record(False, 1.0)], 0, 1, 1),  # retry_disturbed 0: measured once
    ],
)
def test_retries_keep_the_first_quiet_attempt_or_the_least_disturbed(records, retries, kept, attempts):
    queue = [dict(one) for one in records]
    ran, said = [], []

    def attempt():
        ran.append(queue.pop(0))
        return {"latencies": [len(ran)], "disturbance": ran[-1]}

    settings = DisturbanceSettings(retry_disturbed=retries, retry_pause_s=0)
    result = retried(attempt, lambda result: result["disturbance"], settings, said.append, "tiny batch 1")
    assert len(ran) == attempts and result["latencies"] == [kept]
    assert result["disturbance"]["attempts"] == attempts and result["disturbance"]["kept_attempt"] == kept
    assert sorted(entry["attempt"] for entry in result["disturbance"]["discarded"]) == [
        number for number in range(1, attempts + 1) if number != kept
    ]
    assert sum("measuring again" in line for line in said) == attempts - 1


@TWO_CPUS
def test_pinning_places_client_and_server_apart_and_gives_the_client_its_cpus_back():
    own = os.sched_getaffinity(0)
    client = min(own)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        with pinned([client], child.pid) as placement:
            assert os.sched_getaffinity(0) == {client}
            assert os.sched_getaffinity(child.pid) == own - {client}
            assert set(psutil.Process(child.pid).cpu_affinity()) == own - {client}
            assert placement["client_cpus"] == [client] and placement["server_cpus"] == sorted(own - {client})
        assert os.sched_getaffinity(0) == own
        with pytest.raises(ServeprofError, match="leave the server no CPU"):
            with pinned(sorted(own), child.pid):
                pass
        with pytest.raises(ServeprofError, match="not all CPUs this process may use"):
            with pinned([max(own) + 64], child.pid):
                pass
        assert os.sched_getaffinity(0) == own
    finally:
        child.kill()
        child.wait(timeout=30)
    with pinned(None, None) as placement:
        assert placement is None and os.sched_getaffinity(0) == own


@TWO_CPUS
def test_a_disturbed_load_point_is_flagged_measured_again_and_marked_in_the_load_report(
    embedded_server, tmp_path, busy_loop
):
    """A load point beside a busy loop: the measure: limits flag it, measure.retry_disturbed measures it
    again, and the load summary, best table and latency-throughput figure mark it."""
    from serveprof.load.figures import build_latency_throughput
    from serveprof.load.report import best_markdown, best_table, summaries_of
    from serveprof.load.results import summary_row, write_summary
    from serveprof.report.figures import DISTURBED_LABEL
    from serveprof.settings import style
    from tests.test_load import SHORT

    points = tmp_path / "load" / "tiny" / "closed"
    done = serveprof(
        "load",
        "--model", "tiny", "--scenario", "closed", "--point", "c1",
        "--address", embedded_server.grpc_target, "--pid", str(embedded_server.pid),
        "--load", json.dumps(SHORT),
        "--retry-disturbed", "1", "--retry-pause", "0",
        "--requests-out", str(points / "c1.csv"), "--summary-out", str(points / "c1.json"),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert busy_loop.poll() is None, "the busy loop must outlive the point"
    document = json.loads((points / "c1.json").read_text())
    disturbance = document["disturbance"]
    assert disturbance["flagged"] is True and disturbance["foreign_cpu_pct"] > 25
    assert busy_loop.pid in [entry["pid"] for entry in disturbance["top_foreign"]]
    assert disturbance["attempts"] == 2 and len(disturbance["discarded"]) == 1
    assert "tiny closed/c1: measuring again" in done.stderr and "still disturbed after 2 attempts" in done.stderr
    assert "result" not in document and document["stats"]["count"] > 0  # the kept attempt's own figures

    summary = tmp_path / "load" / "tiny" / "summary.csv"
    write_summary(summary, [summary_row("tiny", document)])
    summaries = summaries_of([summary])
    assert summaries["tiny"]["disturbed"].tolist() == [True]
    markdown = best_markdown(best_table(summaries, tmp_path / "load", None, tmp_path / "report"), None)
    assert "| True |" in markdown and "A point marked disturbed was measured while other processes" in markdown
    figure = build_latency_throughput("tiny", summaries["tiny"], None, style({"dpi": 60}))
    assert any(line.get_gid() == "disturbed:closed" for line in figure.axes[0].lines)
    assert DISTURBED_LABEL in [text.get_text() for legend in figure.legends for text in legend.get_texts()]

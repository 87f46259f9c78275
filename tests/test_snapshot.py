"""`serveprof snapshot NAME`: a kept run is a whole copy, never clobbered, and `compare` finds it by name."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from serveprof.atomic import atomic_write_text
from serveprof.cli import main as serveprof
from serveprof.compare.runs import resolve, snapshot
from serveprof.compare.trees import read_tree
from serveprof.errors import ServeprofError
from tests.compare_helpers import latencies, write_run


def project(root, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    write_run(root, {"nasnet": {1: latencies(rng, 45 * scale, 800), 2: latencies(rng, 80 * scale, 800)}})
    acquired = root / "data" / "model" / "acquired"
    acquired.mkdir(parents=True)
    (acquired / "nasnet.json").write_text(json.dumps({"model": "nasnet", "status": "ok", "weights": "imagenet"}))
    return root


def files(root) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_snapshot_copies_every_result_and_records_where_from(tmp_path):
    source = project(tmp_path / "project")
    (source / "workload" / "profiling" / "nasnet" / ".summary.csv.1a2b3c4d.tmp").write_text("half-written")
    runs = tmp_path / "runs"
    assert (
        serveprof(
            ["snapshot", "baseline", "--from", str(source), "--runs-dir", str(runs), "--note", "before the upgrade"]
        )
        == 0
    )
    kept = runs / "baseline"
    expected = {name: data for name, data in files(source).items() if not name.endswith(".tmp")}
    got = files(kept)
    record = json.loads(got.pop("snapshot.json"))
    assert got == expected  # every result file and status, byte for byte; no temporary file
    assert record["name"] == "baseline" and record["note"] == "before the upgrade"
    assert record["source"] == str(source.resolve()) and record["series"] == 2 and record["models"] == ["nasnet"]
    assert record["files"] == len(expected) and record["linked"] is False
    assert not any(path.name.startswith(".") for path in runs.iterdir())  # no partial copy left behind
    # The kept run is a result tree like any other.
    assert resolve("baseline", runs) == kept
    assert len(read_tree(kept / "workload").series) == len(read_tree(kept).series) == 2  # the workload folder reads too
    assert serveprof(["plot", "--results", str(kept / "workload" / "profiling"), "--models", "nasnet", "--only", "latency",
                      "--out", str(tmp_path / "figures")]) == 0  # fmt: skip


def test_snapshot_refuses_to_overwrite_unless_asked(tmp_path, capsys):
    runs = tmp_path / "runs"
    snapshot("baseline", project(tmp_path / "first", seed=1), runs)
    before = files(runs / "baseline")
    second = project(tmp_path / "second", seed=2)
    assert serveprof(["snapshot", "baseline", "--from", str(second), "--runs-dir", str(runs)]) == 1
    error = capsys.readouterr().err
    assert "run 'baseline' already exists" in error and "--replace" in error and str(tmp_path / "first") in error
    assert files(runs / "baseline") == before
    snapshot("baseline", second, runs, replace=True)
    after = files(runs / "baseline")
    after.pop("snapshot.json")
    assert after == files(second)
    assert sorted(path.name for path in runs.iterdir()) == ["baseline"]


def test_linked_snapshot_survives_the_workflow_rewriting_results(tmp_path):
    source = project(tmp_path / "project")
    kept = snapshot("linked", source, tmp_path / "runs", link=True)
    summary = "workload/profiling/nasnet/summary.csv"
    assert os.stat(source / summary).st_ino == os.stat(kept / summary).st_ino
    original = (kept / summary).read_text()
    atomic_write_text(source / summary, "rewritten by a later run\n")  # as every result writer does
    assert (kept / summary).read_text() == original


def test_bad_names_and_empty_sources_leave_nothing(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ServeprofError, match="not usable as a folder name"):
        snapshot("../escape", project(tmp_path / "project"), runs)
    (tmp_path / "empty" / "workload").mkdir(parents=True)
    with pytest.raises(ServeprofError, match="holds no results"):
        snapshot("empty", tmp_path / "empty", runs)
    assert not runs.exists()


def test_a_bare_profiling_folder_is_kept_in_the_project_layout(tmp_path):
    source = project(tmp_path / "project")
    kept = snapshot("bare", source / "workload" / "profiling", tmp_path / "runs")
    assert (kept / "workload" / "profiling" / "nasnet" / "nasnet-b1.csv").read_bytes() == (
        source / "workload" / "profiling" / "nasnet" / "nasnet-b1.csv"
    ).read_bytes()


def test_compare_takes_two_kept_run_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    snapshot("before", project(tmp_path / "a", seed=1))
    snapshot("after", project(tmp_path / "b", seed=2, scale=1.25))
    assert serveprof(["compare", "before", "after", "--resamples", "200"]) == 3
    assert (tmp_path / "reports" / "compare" / "compare.md").read_text().count(
        "**regression**"
    ) == 4  # p50, p99 × 2 batches

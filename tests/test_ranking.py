"""`serveprof rank`: models ranked per device, flips between devices, and pairs within noise."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from serveprof.cli import main as serveprof
from tests.report_helpers import PROFILED, PROFILING


def device_run(tmp_path, name: str, scale: dict[str, float], intervals: dict[tuple[str, int], tuple] | None = None):
    """The fixture run as device ``name``, each model's mean latency scaled, with repeat intervals where given."""
    folder = tmp_path / name
    shutil.copytree(PROFILING, folder)
    for model in PROFILED:
        path = folder / model / "summary.csv"
        frame = pd.read_csv(path)
        frame["mean_ms"] *= scale.get(model, 1.0)
        frame.to_csv(path, index=False)
        cells = [{"batch_size": batch, "ci_low_ms": low, "ci_high_ms": high}
                 for (owner, batch), (low, high) in (intervals or {}).items() if owner == model]  # fmt: skip
        if cells:
            provenance = folder / model / "provenance.json"
            provenance.write_text(json.dumps({**json.loads(provenance.read_text()), "repeat_cells": cells}))
    return folder


def test_rankings_flips_and_noise_across_two_devices(tmp_path):
    # host at batch 1: inception 34.8, nasnet 46.5, ssd_mobilenet 70.9 ms. On edge nasnet is 3x faster
    # (15.5 ms, first), and at batch 2 its interval overlaps inception's, so that flip is within noise.
    host = device_run(tmp_path, "host", {})
    edge = device_run(
        tmp_path, "edge", {"nasnet": 1 / 3}, {("nasnet", 2): (20.0, 40.0), ("inception", 2): (35.0, 80.0)}
    )
    out = tmp_path / "out"
    assert (
        serveprof(["rank", "--devices", f"host={host}", f"edge={edge}", "--models", *PROFILED, "--out", str(out)]) == 0
    )
    ranking = pd.read_csv(out / "ranking.csv", keep_default_na=False)
    latency_b1 = ranking[(ranking["metric"] == "latency") & (ranking["batch_size"] == 1)]
    order = {device: list(rows.sort_values("rank")["model"]) for device, rows in latency_b1.groupby("device")}
    assert order == {"host": ["inception", "nasnet", "ssd_mobilenet"], "edge": ["nasnet", "inception", "ssd_mobilenet"]}
    flips = pd.read_csv(out / "flips.csv")
    latency = flips[flips["metric"] == "latency"].set_index("batch_size")
    assert list(latency["model_a"] + "/" + latency["model_b"]) == ["inception/nasnet"] * 4
    assert (latency["a_first_on"] == "host").all() and (latency["b_first_on"] == "edge").all()
    assert bool(latency.at[2, "within_noise"]) and not bool(latency.at[1, "within_noise"])
    assert flips[flips["metric"] == "memory"].empty  # the same peaks on both devices
    text = (out / "ranking.md").read_text()
    assert "| latency | 2 | inception, nasnet | host | edge | yes: no surprise |" in text
    assert "≈ 2. inception" in text  # within noise of nasnet, above it on edge at batch 2


def test_rank_names_a_missing_results_folder(tmp_path, capsys):
    assert serveprof(["rank", "--devices", f"edge={tmp_path / 'nope'}", "--models", "m", "--out", str(tmp_path)]) == 1
    assert "no results folder for device(s) edge" in capsys.readouterr().err

"""``serveprof acquire`` end to end, as the workflow runs it: a subprocess, real HTTP on loopback.

Keras weights: the subprocess gets an empty ``KERAS_HOME`` and a proxy on a closed
loopback port, so "offline" holds whether or not this machine has internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.embedded_server import free_port
from tests.fixtures.http_server import FileServer
from tests.fixtures.tarballs import zoo_shaped_tarball

MOBILENET_96 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96.h5"


def run_acquire(
    workdir: Path, model: str, spec: dict, *flags: str, keras_home: Path | None = None
) -> subprocess.CompletedProcess:
    closed = f"http://127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_HOME=str(keras_home or workdir / "keras_home"),
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
        http_proxy=closed,
        https_proxy=closed,
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    command = [
        sys.executable,
        "-m",
        "serveprof",
        "acquire",
        "--model",
        model,
        "--spec",
        json.dumps(spec),
        "--download-dir",
        "data/model/download",
        "--out",
        f"data/model/acquired/{model}.json",
        *flags,
    ]
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def status_path(workdir: Path, model: str) -> Path:
    return workdir / "data" / "model" / "acquired" / f"{model}.json"


def status_of(workdir: Path, model: str) -> dict:
    return json.loads(status_path(workdir, model).read_text())


def test_zoo_tarball_is_downloaded_then_reused(tmp_path):
    served = zoo_shaped_tarball(tmp_path / "served" / "tiny_zoo.tar.gz")
    with FileServer(served.parent) as server:
        spec = {
            "source": "tf2_zoo",
            "type": "detection",
            "url": server.url_for("tiny_zoo.tar.gz"),
            "sha256": hashlib.sha256(served.read_bytes()).hexdigest(),
        }
        first = run_acquire(tmp_path, "tiny_zoo", spec)
        assert first.returncode == 0, first.stderr
        assert server.request_count("tiny_zoo.tar.gz") == 1
        written = status_path(tmp_path, "tiny_zoo").read_bytes()
        again = run_acquire(tmp_path, "tiny_zoo", spec)
        assert again.returncode == 0, again.stderr
        assert server.request_count() == 1
    # The same outcome, the same bytes: the workflow then reruns nothing downstream.
    assert status_path(tmp_path, "tiny_zoo").read_bytes() == written
    status = status_of(tmp_path, "tiny_zoo")
    assert status["status"] == "ok" and status["weights"] == "zoo" and status["source"] == "tf2_zoo"
    assert status["artifact"] == "data/model/download/tiny_zoo.tar.gz"
    assert status["sha256"] == spec["sha256"] and status["reason"] is None and status["missing_file"] is None
    assert (tmp_path / status["artifact"]).read_bytes() == served.read_bytes()
    assert "no network needed" in again.stderr


def test_offline_zoo_model_is_unavailable_with_reason_and_fix(tmp_path):
    spec = {"source": "tf2_zoo", "type": "detection", "url": f"http://127.0.0.1:{free_port()}/tiny_offline.tar.gz"}
    run = run_acquire(tmp_path, "tiny_offline", spec)
    assert run.returncode == 0, run.stderr
    status = status_of(tmp_path, "tiny_offline")
    assert status["status"] == "unavailable" and status["weights"] is None
    assert spec["url"] in status["reason"] and "connection refused" in status["reason"]
    assert "stage the tarball at data/model/download/tiny_offline.tar.gz" in status["fix"]
    assert status["missing_file"] == "data/model/download/tiny_offline.tar.gz"
    assert not list((tmp_path / "data" / "model" / "download").glob("tiny_offline*"))


def test_strict_offline_zoo_model_fails_and_writes_no_status(tmp_path):
    spec = {"source": "tf2_zoo", "type": "detection", "url": f"http://127.0.0.1:{free_port()}/tiny_offline.tar.gz"}
    run = run_acquire(tmp_path, "tiny_offline", spec, "--strict")
    assert run.returncode != 0
    assert "model tiny_offline cannot be obtained" in run.stderr and "connection refused" in run.stderr
    assert "fix: stage the tarball" in run.stderr
    assert not (tmp_path / "data" / "model" / "acquired" / "tiny_offline.json").exists()


def test_a_spec_missing_a_key_is_refused_with_the_fix(tmp_path):
    run = run_acquire(tmp_path, "bad", {"source": "tf2_zoo", "type": "detection"})
    assert run.returncode == 1
    assert "'url' is a required property" in run.stderr and "a tf2_zoo model needs url" in run.stderr
    assert not (tmp_path / "data" / "model" / "acquired" / "bad.json").exists()


def test_saved_model_takes_the_highest_numeric_version(tmp_path):
    base = tmp_path / "mine"
    for version in ("1", "3", "20x"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"pb")
    (base / "7").mkdir()  # no saved_model.pb: not a version
    run = run_acquire(tmp_path, "mine", {"source": "saved_model", "type": "classification", "path": "mine"})
    assert run.returncode == 0, run.stderr
    status = status_of(tmp_path, "mine")
    assert status["status"] == "ok" and status["weights"] == "saved_model" and status["artifact"] == "mine/3"


def test_a_wrong_saved_model_path_is_a_hard_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for path, what in (("nowhere", "does not exist"), ("empty", "holds no saved_model.pb")):
        run = run_acquire(tmp_path, "mine", {"source": "saved_model", "type": "classification", "path": path})
        assert run.returncode == 1
        assert (
            f"SavedModel path {path}" in run.stderr and what in run.stderr and "fix: set the model's path" in run.stderr
        )
        assert not (tmp_path / "data" / "model" / "acquired" / "mine.json").exists()


def keras_spec(application: str = "MobileNetV2", **keys) -> dict:
    return {"source": "keras", "type": "classification", "application": application, **keys}


def test_an_unknown_keras_application_names_close_matches(tmp_path):
    run = run_acquire(tmp_path, "nasnet", keras_spec("NASNetLarg"))
    assert run.returncode == 1
    assert "keras.applications has no application 'NASNetLarg'" in run.stderr
    assert "did you mean NASNetLarge" in run.stderr


def test_keras_random_weights_need_nothing(tmp_path):
    run = run_acquire(tmp_path, "tiny_keras", keras_spec(input_size=[32, 32], weights="random"))
    assert run.returncode == 0, run.stderr
    status = status_of(tmp_path, "tiny_keras")
    assert (status["status"], status["weights"], status["reason"]) == ("ok", "random", None)


def test_offline_imagenet_weights_fall_back_to_random_when_allowed(tmp_path):
    run = run_acquire(tmp_path, "mobile", keras_spec(input_size=[96, 96]))
    assert run.returncode == 0, run.stderr
    status = status_of(tmp_path, "mobile")
    assert (status["status"], status["weights"]) == ("ok", "random")
    assert MOBILENET_96 in status["reason"] and "random weights" in status["reason"]
    assert str(tmp_path / "keras_home" / "models") in status["fix"]
    assert status["missing_file"] == str(tmp_path / "keras_home" / "models" / MOBILENET_96)


def test_offline_imagenet_weights_are_unavailable_when_random_is_not_allowed(tmp_path):
    run = run_acquire(tmp_path, "mobile", keras_spec(input_size=[96, 96]), "--no-allow-random-weights")
    assert run.returncode == 0, run.stderr
    status = status_of(tmp_path, "mobile")
    assert status["status"] == "unavailable" and MOBILENET_96 in status["reason"]
    assert f"put {MOBILENET_96}" in status["fix"] and "allow_random_weights: true" in status["fix"]
    assert status["missing_file"] == str(tmp_path / "keras_home" / "models" / MOBILENET_96)


def test_staged_imagenet_weights_are_used_offline(tmp_path):
    staged = tmp_path / "keras_home" / "models" / MOBILENET_96
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"weights staged by hand")
    run = run_acquire(tmp_path, "mobile", keras_spec(input_size=[96, 96]), "--no-allow-random-weights")
    assert run.returncode == 0, run.stderr
    status = status_of(tmp_path, "mobile")
    assert (status["status"], status["weights"], status["artifact"]) == ("ok", "imagenet", str(staged))
    assert status["missing_file"] is None


def test_an_input_size_the_imagenet_weights_do_not_fit_is_a_hard_error(tmp_path):
    run = run_acquire(tmp_path, "nasnet", keras_spec("NASNetLarge", input_size=[224, 224]))
    assert run.returncode == 1
    assert "NASNetLarge" in run.stderr and "cannot be built" in run.stderr and "weights: random" in run.stderr
    assert not (tmp_path / "data" / "model" / "acquired" / "nasnet.json").exists()

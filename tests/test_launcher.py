"""The launcher: real ``serveprof serve`` processes for the embedded backend, command lines for the rest.

Docker and Apptainer have no engine here and no tensorflow_model_server exists, so
those backends are checked by the command line they build; every test that starts a
server starts a real one, and every one checks with psutil that nothing is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from serveprof.client import GrpcClient, RestClient
from serveprof.errors import ServeprofError
from serveprof.launch import ServerDied, ServerSpec, launch
from serveprof.launch import server as launcher_module
from serveprof.launch.commands import backend_version, build_command, resolve_backend
from tests.fixtures.embedded_server import REPO, TINY_IMAGE_SIZE, TINY_MODEL_NAME

START_TIMEOUT_S = 240  # TensorFlow's import is slow on a shared 2-core machine
GONE_WITHIN_S = 5


@pytest.fixture(autouse=True)
def quiet_tensorflow(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


def embedded(base: Path, log: Path | None = None, **settings) -> ServerSpec:
    return ServerSpec.from_config({"backend": "embedded", "startup_timeout_s": START_TIMEOUT_S, **settings},
                                  TINY_MODEL_NAME, str(base), str(log) if log else None)


def servers_of(marker: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``marker`` (a test's own temp path)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def gone(pid: int, within_s: float = GONE_WITHIN_S) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def kill_leftovers(marker: str) -> None:
    for process in servers_of(marker):
        process.kill()


@pytest.fixture
def model_copy(tiny_classifier_base, tmp_path) -> Path:
    """The tiny model under this test's own path, so its servers can be told apart from others'."""
    base = tmp_path / "models" / TINY_MODEL_NAME
    base.parent.mkdir()
    base.symlink_to(tiny_classifier_base, target_is_directory=True)
    yield base
    kill_leftovers(str(tmp_path))


# ---------------------------------------------------------------- embedded, for real


def test_embedded_server_serves_reports_itself_and_is_gone_after(model_copy, tmp_path):
    log = tmp_path / "server.log"
    batch = np.random.default_rng(0).random((2, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), dtype=np.float32)
    with launch(embedded(model_copy, log)) as server:
        pid = server.pid
        assert psutil.Process(pid).is_running()
        assert server.available_ns > server.started_ns
        assert server.info["backend"] == "embedded"
        assert server.info["version"].startswith("serveprof-embedded-") and "TensorFlow 2." in server.info["version"]
        assert server.info["command"][:4] == [sys.executable, "-m", "serveprof", "serve"]
        assert f"--model_base_path={model_copy}" in server.info["command"]
        with GrpcClient(server.grpc_target, TINY_MODEL_NAME, timeout_s=60) as grpc_client, \
                RestClient(server.rest_url, TINY_MODEL_NAME, timeout_s=60) as rest_client:
            assert grpc_client.model_status() == "AVAILABLE"
            by_grpc = grpc_client.predict({"images": batch})["probabilities"]
            by_rest = rest_client.predict({"images": batch})["probabilities"]
        assert by_grpc.shape == (2, 3)
        np.testing.assert_allclose(by_grpc.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(by_grpc, by_rest)
        server.check_alive()  # alive: no exception
        assert "AVAILABLE" in server.log_tail()
    assert gone(pid)
    assert "AVAILABLE" in log.read_text(), "the log file given in the spec keeps the server's output"


def test_a_killed_server_raises_server_died_with_its_log(model_copy):
    with launch(embedded(model_copy)) as server:
        os.kill(server.pid, signal.SIGKILL)
        with GrpcClient(server.grpc_target, TINY_MODEL_NAME, timeout_s=10) as client:
            with pytest.raises(Exception):
                client.send(client.prepare({"images": np.zeros((1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), np.float32)}))
        with pytest.raises(ServerDied) as died:
            server.check_alive()
        message = str(died.value)
        assert "signal 9 (SIGKILL)" in message and "AVAILABLE" in message  # quotes the log tail
        log_path = server.log_path
    assert not Path(log_path).exists(), "a temporary log is removed once the launch ends cleanly"


def test_an_exception_inside_the_block_tears_the_server_down(model_copy):
    with pytest.raises(RuntimeError, match="measurement failed"):
        with launch(embedded(model_copy)) as server:
            pid = server.pid
            raise RuntimeError("measurement failed")
    assert gone(pid)


def test_a_server_that_cannot_load_the_model_fails_with_its_log_and_leaves_nothing(tmp_path):
    base = tmp_path / "broken" / TINY_MODEL_NAME
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    log = tmp_path / "logs" / "server.log"
    with pytest.raises(ServeprofError) as failed:
        with launch(embedded(base, log)):
            pytest.fail("a broken model must not become AVAILABLE")
    message = str(failed.value)
    assert "before the model was AVAILABLE" in message or "state END" in message
    assert "    | " in message and str(log) in message, "the server log's tail is quoted and the log named"
    assert "fix:" in message and "saved_model.pb" in message
    assert servers_of(str(base)) == []


def test_a_missing_model_directory_is_refused_before_starting(tmp_path):
    with pytest.raises(ServeprofError, match="is not a directory(.|\n)*serveprof export"):
        with launch(embedded(tmp_path / "nowhere")):
            pass


def test_startup_timeout_raises_and_leaves_nothing(model_copy, tmp_path):
    started = time.monotonic()
    with pytest.raises(ServeprofError, match="within server.startup_timeout_s = 0.5 s(.|\n)*raise server.startup_timeout_s"):
        with launch(embedded(model_copy, tmp_path / "server.log", startup_timeout_s=0.5)):
            pytest.fail("the tiny model cannot be AVAILABLE 0.5 s after the server starts")
    assert time.monotonic() - started < 30
    assert servers_of(str(tmp_path)) == []


def test_ports_lost_to_another_program_are_retried(model_copy, monkeypatch):
    """The first ports chosen are taken by the time the server binds: it fails, the launcher retries."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real_free_ports = launcher_module.free_ports
    chosen: list[list[int]] = []

    def race_then_real(host, count=2):
        ports = [taken.getsockname()[1], real_free_ports(host, 1)[0]] if not chosen else real_free_ports(host, count)
        chosen.append(ports)
        return ports

    monkeypatch.setattr(launcher_module, "free_ports", race_then_real)
    try:
        with launch(embedded(model_copy)) as server:
            assert len(chosen) == 2
            assert server.grpc_port == chosen[1][0] != taken.getsockname()[1]
            with GrpcClient(server.grpc_target, TINY_MODEL_NAME, timeout_s=60) as client:
                assert client.model_status() == "AVAILABLE"
    finally:
        taken.close()


LAUNCHER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from serveprof.launch import ServerSpec, launch, terminate_on_sigterm
    spec = ServerSpec.from_config({"backend": "embedded", "startup_timeout_s": 240}, "tiny", sys.argv[1], sys.argv[2])
    with terminate_on_sigterm(), launch(spec) as server:
        print(json.dumps({"pid": server.pid}), flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_the_server_dies_with_its_launcher(model_copy, tmp_path, how):
    log = tmp_path / "server.log"  # a SIGKILLed launcher cannot remove a temporary log
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER_SCRIPT, str(model_copy), str(log)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = launcher.stdout.readline()
        assert line, launcher.stderr.read()[-3000:]
        pid = json.loads(line)["pid"]
        assert psutil.Process(pid).is_running()
        launcher.send_signal(getattr(signal, how))
        returncode = launcher.wait(timeout=30)
        assert returncode == (-signal.SIGKILL if how == "SIGKILL" else 128 + signal.SIGTERM)
        assert gone(pid), f"the server outlived its launcher's {how}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


# ------------------------------------------------------------ choosing the backend


def fake_tensorflow_model_server(folder: Path) -> Path:
    """An executable named tensorflow_model_server that only answers --version (never served)."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "tensorflow_model_server"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$1" = "--version" ]; then\n'
                    '  echo "TensorFlow ModelServer: 2.18.0-rc0+dev.sha.abc123"\n'
                    '  echo "TensorFlow Library: 2.18.0"\n'
                    "  exit 0\nfi\n"
                    "echo 'this fake must never be run as a server' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def spec_for(tmp_path: Path, **settings) -> ServerSpec:
    return ServerSpec.from_config(settings, "tiny", str(tmp_path / "models" / "tiny"))


def test_auto_picks_tfserving_when_on_path_and_embedded_otherwise(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert resolve_backend(spec_for(tmp_path)) == "embedded"
    assert build_command(spec_for(tmp_path), "embedded", 1, 2)[:4] == [sys.executable, "-m", "serveprof", "serve"]

    fake = fake_tensorflow_model_server(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{empty}")
    spec = spec_for(tmp_path)
    assert resolve_backend(spec) == "tfserving"
    assert build_command(spec, "tfserving", 1, 2)[0] == str(fake)


def test_auto_uses_a_configured_tfserving_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    fake = fake_tensorflow_model_server(tmp_path / "opt" / "serving")
    spec = spec_for(tmp_path, tfserving_path=str(fake))
    assert resolve_backend(spec) == "tfserving"
    command = build_command(spec, "tfserving", 8600, 8601)
    assert backend_version(spec, "tfserving", command) == "2.18.0-rc0+dev.sha.abc123 (TensorFlow 2.18.0)"


def test_tfserving_command_line(tmp_path, monkeypatch):
    fake = fake_tensorflow_model_server(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(fake.parent))
    spec = spec_for(tmp_path, backend="tfserving", intra_op_threads=2, inter_op_threads=1,
                    extra_flags=["--rest_api_timeout_in_ms=60000"])
    base = str(tmp_path / "models" / "tiny")
    assert build_command(spec, "tfserving", 8600, 8601) == [
        str(fake), "--port=8600", "--rest_api_port=8601", "--model_name=tiny", f"--model_base_path={base}",
        "--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=1", "--rest_api_timeout_in_ms=60000"]


def test_tfserving_backend_without_the_binary_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServeprofError, match="tensorflow_model_server not found(.|\n)*tfserving_path"):
        build_command(spec_for(tmp_path, backend="tfserving"), "tfserving", 1, 2)


@pytest.mark.parametrize("gpu", [False, True])
def test_docker_command_line(tmp_path, gpu):
    spec = spec_for(tmp_path, backend="docker", image_tag="2.18.0", gpu=gpu, extra_flags=["--enable_batching"])
    base = str(tmp_path / "models" / "tiny")
    command = build_command(spec, "docker", 8600, 8601, name="serveprof-tiny-test")
    image = "tensorflow/serving:2.18.0-gpu" if gpu else "tensorflow/serving:2.18.0"
    at = command.index(image)
    options, server_flags = command[:at], command[at + 1:]
    assert options[:4] == ["docker", "run", "--rm", "--name"] and options[4] == "serveprof-tiny-test"
    assert "serveprof.launcher=serveprof" in options
    assert options[options.index("--mount") + 1] == f"type=bind,source={base},target=/models/tiny,readonly"
    published = [options[i + 1] for i, part in enumerate(options) if part == "-p"]
    assert published == ["127.0.0.1:8600:8500", "127.0.0.1:8601:8501"]
    assert ("--gpus" in options) == gpu and (not gpu or options[options.index("--gpus") + 1] == "all")
    assert options[-2:] == ["--entrypoint", "tensorflow_model_server"]
    assert server_flags == ["--port=8500", "--rest_api_port=8501", "--model_name=tiny",
                            "--model_base_path=/models/tiny", "--enable_batching"]
    assert backend_version(spec, "docker", command) == image


@pytest.mark.parametrize("gpu", [False, True])
def test_apptainer_command_line(tmp_path, gpu):
    spec = spec_for(tmp_path, backend="apptainer", apptainer_path="/opt/apptainer/bin/apptainer", gpu=gpu)
    base = str(tmp_path / "models" / "tiny")
    command = build_command(spec, "apptainer", 8600, 8601)
    image = "docker://tensorflow/serving:latest" + ("-gpu" if gpu else "")
    expected = ["/opt/apptainer/bin/apptainer", "exec", *(["--nv"] if gpu else []), "--bind",
                f"{base}:/models/tiny:ro", image, "tensorflow_model_server", "--port=8600", "--rest_api_port=8601",
                "--model_name=tiny", "--model_base_path=/models/tiny"]
    assert command == expected


def test_apptainer_uses_a_local_sif_as_given(tmp_path):
    sif = tmp_path / "serving_2.18.0.sif"
    sif.write_bytes(b"")
    spec = spec_for(tmp_path, backend="apptainer", image=str(sif), gpu=True)
    command = build_command(spec, "apptainer", 8600, 8601)
    assert command[command.index("tensorflow_model_server") - 1] == str(sif)
    assert backend_version(spec, "apptainer", command) == str(sif)


def test_an_image_with_its_own_tag_is_not_retagged(tmp_path):
    spec = spec_for(tmp_path, backend="docker", image="registry.example/serving:2.17.1", image_tag="latest")
    assert "registry.example/serving:2.17.1" in build_command(spec, "docker", 1, 2, name="n")


def test_docker_without_a_client_is_refused_before_starting(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    spec = spec_for(tmp_path, backend="docker", docker_path=str(tmp_path / "no-docker"))
    with pytest.raises(ServeprofError, match="docker client not found(.|\n)*server.docker_path"):
        with launch(spec):
            pass


def test_server_settings_are_checked_with_the_schemas_fixes(tmp_path):
    with pytest.raises(ServeprofError, match="unknown key.*'backnd'(.|\n)*fix"):
        ServerSpec.from_config({"backnd": "embedded"}, "tiny", str(tmp_path))
    with pytest.raises(ServeprofError, match="server.backend(.|\n)*auto, embedded, tfserving, docker or apptainer"):
        ServerSpec.from_config({"backend": "kubernetes"}, "tiny", str(tmp_path))
    spec = ServerSpec.from_config({}, "tiny", str(tmp_path))
    assert (spec.backend, spec.image, spec.image_tag, spec.startup_timeout_s, spec.extra_flags) == (
        "auto", "tensorflow/serving", "latest", 600, ())

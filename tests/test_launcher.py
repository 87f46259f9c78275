"""The launcher: real ``serveprof serve`` processes for the embedded backend, command lines for the rest.

Docker and Apptainer have no engine here and no tensorflow_model_server exists, so
those backends are checked by the command lines they build, and their probes against
fake ``docker``/``apptainer``/``tensorflow_model_server`` executables (real processes
that answer as the real ones do). The Docker path also runs end to end, with a fake
``docker run`` that serves through the embedded server. Every test that starts a
server starts a real one, and every one checks with psutil that nothing is left.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
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

from serveprof.client import GrpcClient, RestClient, ServingRequestError
from serveprof.errors import ServeprofError
from serveprof.launch import ServerDied, ServerSpec, launch, probes
from serveprof.launch import server as launcher_module
from serveprof.launch.commands import (
    build_command,
    docker_container_inspect_command,
    docker_image_inspect_command,
    embedded_gpu_probe_command,
    image_reference,
    resolve_backend,
    server_environment,
    version_command,
)
from serveprof.launch.options import MONITORING_FILE, option_files
from serveprof.launch.probes import gpu_status, identify, run_probe
from serveprof.launch.spec import METRICS_PATH
from serveprof.settings import server_settings
from tests.fixtures.embedded_server import REPO, TINY_IMAGE_SIZE, TINY_MODEL_NAME

START_TIMEOUT_S = 240  # TensorFlow's import is slow on a shared 2-core machine
GONE_WITHIN_S = 5


@pytest.fixture(autouse=True)
def quiet_tensorflow(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


def spec_of(server: dict, model: str, base: str, log: str | None = None) -> ServerSpec:
    """A ServerSpec from a server: block, as `serveprof measure --server` builds it."""
    return ServerSpec.serving(server_settings(server), model, base, log)


def embedded(base: Path, log: Path | None = None, **settings) -> ServerSpec:
    return spec_of(
        {"backend": "embedded", "startup_timeout_s": START_TIMEOUT_S, **settings},
        TINY_MODEL_NAME,
        str(base),
        str(log) if log else None,
    )


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
        assert server.info["tensorflow_version"] == importlib.metadata.version("tensorflow")
        assert (server.info["image"], server.info["image_digest"], server.info["notes"]) == (None, None, [])
        assert server.info["command"][:4] == [sys.executable, "-m", "serveprof", "serve"]
        # server.gpu is false: the server's TensorFlow is given no GPU, so none can blur a CPU measurement.
        assert (server.info["gpu_requested"], server.info["gpu_used"]) == (False, False)
        assert psutil.Process(pid).environ()["CUDA_VISIBLE_DEVICES"] == "-1"
        assert f"--model_base_path={model_copy}" in server.info["command"]
        with (
            GrpcClient(server.grpc_target, TINY_MODEL_NAME, timeout_s=60) as grpc_client,
            RestClient(server.rest_url, TINY_MODEL_NAME, timeout_s=60) as rest_client,
        ):
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
            with pytest.raises(ServingRequestError) as refused:
                client.send(client.prepare({"images": np.zeros((1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), np.float32)}))
            assert refused.value.code == "UNAVAILABLE"  # nothing listens on the port any more
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
    # The server may exit first or report END first; either way the launcher says so in the same words,
    # and the log it quotes holds the server's own reason (it is given time to write it).
    assert f"the embedded server for model '{TINY_MODEL_NAME}' failed to load the model: it " in message
    assert "    | " in message and str(log) in message, "the server log's tail is quoted and the log named"
    assert "Failed to start server. Error:" in message
    assert "fix:" in message and "saved_model.pb" in message
    assert servers_of(str(base)) == []


def test_a_missing_model_directory_is_refused_before_starting(tmp_path):
    with pytest.raises(ServeprofError, match="is not a directory(.|\n)*serveprof export"):
        with launch(embedded(tmp_path / "nowhere")):
            pass


def test_startup_timeout_raises_and_leaves_nothing(model_copy, tmp_path):
    started = time.monotonic()
    with pytest.raises(
        ServeprofError, match="within server.startup_timeout_s = 0.5 s(.|\n)*raise server.startup_timeout_s"
    ):
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
    from serveprof.settings import server_settings
    spec = ServerSpec.serving(server_settings({"backend": "embedded", "startup_timeout_s": 240}), "tiny", sys.argv[1], sys.argv[2])
    with terminate_on_sigterm(), launch(spec) as server:
        print(json.dumps({"pid": server.pid}), flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_the_server_dies_with_its_launcher(model_copy, tmp_path, how):
    log = tmp_path / "server.log"  # a SIGKILLed launcher cannot remove a temporary log
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER_SCRIPT, str(model_copy), str(log)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then\n'
        '  echo "TensorFlow ModelServer: 2.18.0-rc0+dev.sha.abc123"\n'
        '  echo "TensorFlow Library: 2.18.0"\n'
        "  exit 0\nfi\n"
        "echo 'this fake must never be run as a server' >&2\nexit 3\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def spec_for(tmp_path: Path, **settings) -> ServerSpec:
    return spec_of(settings, "tiny", str(tmp_path / "models" / "tiny"))


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
    assert version_command(spec, "tfserving", command, None) == [str(fake), "--version"]
    facts = identify(spec, "tfserving", command, None, log_text="")
    assert facts.info["version"] == "2.18.0-rc0+dev.sha.abc123 (TensorFlow 2.18.0)"
    assert facts.info["tensorflow_version"] == "2.18.0"  # provenance's tensorflow_version, not only the embedded one's
    assert (facts.info["image"], facts.info["gpu_used"], facts.info["notes"], facts.host_pid) == (None, False, [], None)


def test_tfserving_command_line(tmp_path, monkeypatch):
    fake = fake_tensorflow_model_server(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(fake.parent))
    spec = spec_for(
        tmp_path,
        backend="tfserving",
        intra_op_threads=2,
        inter_op_threads=1,
        extra_flags=["--rest_api_timeout_in_ms=60000"],
    )
    base = str(tmp_path / "models" / "tiny")
    assert build_command(spec, "tfserving", 8600, 8601, options_dir="/tmp/cfg") == [
        str(fake),
        "--port=8600",
        "--rest_api_port=8601",
        "--model_name=tiny",
        f"--model_base_path={base}",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=1",
        # server.request_timeout_s (600 s): TF Serving's own 30 s would answer a slow REST request with 504.
        "--rest_api_timeout_in_ms=600000",
        "--monitoring_config_file=/tmp/cfg/monitoring_config.txt",
        "--rest_api_timeout_in_ms=60000",  # extra_flags come last, so they win
    ]
    assert list(option_files(spec)) == [MONITORING_FILE]
    # The file is TF Serving's text-format MonitoringConfig, as the embedded server parses it too.
    from serveprof.server.config_protos import parse_text_file

    (tmp_path / "monitoring.txt").write_text(option_files(spec)[MONITORING_FILE])
    monitoring = parse_text_file(tmp_path / "monitoring.txt", "MonitoringConfig", "--monitoring_config_file")
    assert (monitoring.prometheus_config.enable, monitoring.prometheus_config.path) == (True, METRICS_PATH)
    quiet = spec_for(tmp_path, backend="tfserving", monitoring=False, tensor_content=True, request_timeout_s=1.5)
    assert option_files(quiet) == {}
    assert build_command(quiet, "tfserving", 8600, 8601, options_dir="/tmp/cfg")[5:] == [
        "--rest_api_timeout_in_ms=1500",
        "--enable_serialization_as_tensor_content=true",
    ]


def test_tfserving_backend_without_the_binary_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServeprofError, match="tensorflow_model_server not found(.|\n)*tfserving_path"):
        build_command(spec_for(tmp_path, backend="tfserving"), "tfserving", 1, 2)


@pytest.mark.parametrize("backend", ["tfserving", "docker", "apptainer"])
def test_only_the_embedded_server_is_given_a_bind_address(tmp_path, monkeypatch, backend):
    """TF Serving has no --host flag (it listens on all interfaces): the launcher must never pass one."""
    monkeypatch.setenv("PATH", str(fake_tensorflow_model_server(tmp_path / "bin").parent))
    spec = spec_for(tmp_path, host="10.1.2.3")
    assert not [part for part in build_command(spec, backend, 8600, 8601, name="n") if "--host" in part]
    assert "--host=10.1.2.3" in build_command(spec, "embedded", 8600, 8601)
    if backend == "docker":  # Docker publishes the ports on that address only
        assert "10.1.2.3:8600:8500" in build_command(spec, "docker", 8600, 8601, name="n")


def test_rest_can_be_turned_off_through_extra_flags(model_copy):
    """The mitigation docs/serving.md gives for TF Serving's all-interfaces listeners: the later flag wins."""
    with launch(embedded(model_copy, extra_flags=["--rest_api_port=0"])) as server:
        assert server.command[-1] == "--rest_api_port=0"
        with GrpcClient(server.grpc_target, TINY_MODEL_NAME, timeout_s=60) as client:
            assert client.model_status() == "AVAILABLE"
        process = psutil.Process(server.pid)
        connections = (
            process.net_connections if hasattr(process, "net_connections") else process.connections
        )  # psutil < 6
        listening = {address.laddr.port for address in connections("tcp") if address.status == psutil.CONN_LISTEN}
        assert listening == {server.grpc_port}


@pytest.mark.parametrize("gpu", [False, True])
def test_docker_command_line(tmp_path, monkeypatch, gpu):
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(name, raising=False)  # no scheduler's GPU list: all of them (tests/test_gpu_paths.py)
    spec = spec_for(tmp_path, backend="docker", image_tag="2.18.0", gpu=gpu, extra_flags=["--enable_batching"])
    base = str(tmp_path / "models" / "tiny")
    command = build_command(spec, "docker", 8600, 8601, name="serveprof-tiny-test", options_dir="/tmp/cfg")
    image = "tensorflow/serving:2.18.0-gpu" if gpu else "tensorflow/serving:2.18.0"
    at = command.index(image)
    options, server_flags = command[:at], command[at + 1 :]
    # --init: TF Serving as the container's PID 1 would ignore the SIGTERM that stops it.
    assert options[:5] == ["docker", "run", "--rm", "--init", "--name"] and options[5] == "serveprof-tiny-test"
    assert "serveprof.launcher=serveprof" in options
    mounts = [options[i + 1] for i, part in enumerate(options) if part == "--mount"]
    # The model, and the launcher's option files at options.MOUNT inside.
    assert mounts == [f"type=bind,source={base},target=/models/tiny,readonly",
                      "type=bind,source=/tmp/cfg,target=/serveprof/options,readonly"]  # fmt: skip
    published = [options[i + 1] for i, part in enumerate(options) if part == "-p"]
    assert published == ["127.0.0.1:8600:8500", "127.0.0.1:8601:8501"]
    assert ("--gpus" in options) == gpu and (not gpu or options[options.index("--gpus") + 1] == "all")
    assert options[-2:] == ["--entrypoint", "tensorflow_model_server"]
    assert server_flags == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=tiny",
        "--model_base_path=/models/tiny",
        "--rest_api_timeout_in_ms=600000",
        "--monitoring_config_file=/serveprof/options/monitoring_config.txt",
        "--enable_batching",
    ]
    assert server_environment(spec, "docker") is None  # a container sees no GPU without --gpus anyway


@pytest.mark.parametrize("gpu", [False, True])
def test_apptainer_command_line(tmp_path, gpu):
    spec = spec_for(tmp_path, backend="apptainer", apptainer_path="/opt/apptainer/bin/apptainer", gpu=gpu)
    base = str(tmp_path / "models" / "tiny")
    command = build_command(spec, "apptainer", 8600, 8601, options_dir="/tmp/cfg")
    image = "docker://tensorflow/serving:latest" + ("-gpu" if gpu else "")
    # No PID namespace (no --pid/--containall): TF Serving is not PID 1 and dies of SIGTERM as usual.
    expected = [
        "/opt/apptainer/bin/apptainer",
        "exec",
        *(["--nv"] if gpu else []),
        "--bind",
        f"{base}:/models/tiny:ro",
        "--bind",
        "/tmp/cfg:/serveprof/options:ro",
        image,
        "tensorflow_model_server",
        "--port=8600",
        "--rest_api_port=8601",
        "--model_name=tiny",
        "--model_base_path=/models/tiny",
        "--rest_api_timeout_in_ms=600000",
        "--monitoring_config_file=/serveprof/options/monitoring_config.txt",
    ]
    assert command == expected
    assert version_command(spec, "apptainer", command, None) == [
        "/opt/apptainer/bin/apptainer",
        "exec",
        image,
        "tensorflow_model_server",
        "--version",
    ]


@pytest.mark.parametrize(
    "image, image_tag, gpu, expected",
    [
        ("tensorflow/serving", "2.18.0", False, "tensorflow/serving:2.18.0"),
        ("tensorflow/serving", "2.18.0", True, "tensorflow/serving:2.18.0-gpu"),
        ("tensorflow/serving", "latest", True, "tensorflow/serving:latest-gpu"),
        ("tensorflow/serving", "2.18.0-gpu", True, "tensorflow/serving:2.18.0-gpu"),
        # The image's own tag wins over image_tag, and still gets -gpu for a GPU run.
        ("registry.example/serving:2.17.1", "latest", False, "registry.example/serving:2.17.1"),
        ("registry.example/serving:2.17.1", "latest", True, "registry.example/serving:2.17.1-gpu"),
        ("registry.example/serving:2.17.1-gpu", "latest", True, "registry.example/serving:2.17.1-gpu"),
        ("registry.example/serving:2.17.1-gpu", "latest", False, "registry.example/serving:2.17.1-gpu"),
        # A registry's port is not a tag.
        ("localhost:5000/serving", "2.18.0", True, "localhost:5000/serving:2.18.0-gpu"),
        ("localhost:5000/serving:2.18.0", "latest", True, "localhost:5000/serving:2.18.0-gpu"),
        # A digest pins one image: used as given.
        ("tensorflow/serving@sha256:" + "a" * 64, "latest", False, "tensorflow/serving@sha256:" + "a" * 64),
        ("tensorflow/serving@sha256:" + "a" * 64, "latest", True, "tensorflow/serving@sha256:" + "a" * 64),
    ],
)
def test_image_reference(tmp_path, image, image_tag, gpu, expected):
    spec = spec_for(tmp_path, backend="docker", image=image, image_tag=image_tag, gpu=gpu)
    assert image_reference(spec) == expected
    command = build_command(spec, "docker", 1, 2, name="n")
    assert command[command.index("--entrypoint") + 2] == expected
    assert ("--gpus" in command) == gpu
    if "@" not in image:
        apptainer = build_command(spec, "apptainer", 1, 2)
        assert apptainer[apptainer.index("tensorflow_model_server") - 1] == f"docker://{expected}"


def test_gpus_are_hidden_from_the_server_unless_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    for backend in ("embedded", "tfserving", "apptainer"):
        hidden = server_environment(spec_for(tmp_path, gpu=False), backend)
        assert hidden["CUDA_VISIBLE_DEVICES"] == "-1" and hidden["PATH"] == os.environ["PATH"]
        assert server_environment(spec_for(tmp_path, gpu=True), backend) is None  # the GPUs SLURM gave the job


# ------------------------------------------------------------ what served (provenance)


def executable_script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


FAKE_DOCKER = """#!{python}
# Answers as the docker client does; `run` serves the model through the embedded server instead of a container.
import json, os, subprocess, sys
state = {state!r}
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps(args) + "\\n")
if {broken}:
    print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
          file=sys.stderr)
    sys.exit(1)
if args[0] == "run":
    name = args[args.index("--name") + 1]
    published = {{spec.rsplit(":", 2)[2]: spec.rsplit(":", 2)[1] for i, spec in enumerate(args) if args[i - 1] == "-p"}}
    # Every bind mount: a path inside the container is its source outside.
    mounts = [dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
              for i, spec in enumerate(args) if args[i - 1] == "--mount"]
    flags = []
    for flag in args[args.index("--entrypoint") + 3:]:
        key, _, value = flag.partition("=")
        for mount in mounts:
            if value == mount["target"] or value.startswith(mount["target"] + "/"):
                value = mount["source"] + value[len(mount["target"]):]
        value = {{"--port": published.get("8500"), "--rest_api_port": published.get("8501")}}.get(key, value)
        flags.append(f"{{key}}={{value}}")
    # The container's process as the host sees it: a tensorflow_model_server below the container's init.
    server = subprocess.Popen([os.path.join(state, "tensorflow_model_server"), "600"])
    with open(os.path.join(state, name + ".pid"), "w") as handle:
        handle.write(str(os.getpid()))
    os.execv(sys.executable, [sys.executable, "-m", "serveprof", "serve", "--host=127.0.0.1", *flags])
if args[0] == "exec":
    print("TensorFlow ModelServer: 2.18.0-rc0+dev.sha.abc123")
    print("TensorFlow Library: 2.18.0")
elif args[0] == "inspect":
    with open(os.path.join(state, args[-1] + ".pid")) as handle:
        print(handle.read().strip(), "sha256:" + "b" * 64)
elif args[:2] == ["image", "inspect"]:
    print(json.dumps(["mirror.example/serving@sha256:" + "d" * 64, "tensorflow/serving@sha256:" + "c" * 64]))
"""


def fake_docker(folder: Path, broken: bool = False) -> Path:
    """A docker client stand-in; its calls are logged to folder/calls.jsonl."""
    # `sleep` under the name tensorflow_model_server stands in for the container's server.
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(shutil.which("sleep"), folder / "tensorflow_model_server")
    return executable_script(
        folder / "docker", FAKE_DOCKER.format(python=sys.executable, state=str(folder), broken=broken)
    )


def docker_calls(folder: Path) -> list[list[str]]:
    path = folder / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_docker_backend_end_to_end_records_image_digest_version_and_pid(model_copy, tmp_path):
    """launch() on the docker path, a fake client standing in for the engine: what it runs, asks and removes."""
    state = tmp_path / "docker-state"
    docker = fake_docker(state)
    spec = spec_of(
        {"backend": "docker", "docker_path": str(docker), "image_tag": "2.18.0", "startup_timeout_s": START_TIMEOUT_S},
        TINY_MODEL_NAME,
        str(model_copy),
    )
    with launch(spec) as server:
        name = server.container
        container_init = int((state / f"{name}.pid").read_text())
        in_container = psutil.Process(container_init).children()
        assert [child.name() for child in in_container] == ["tensorflow_model_server"]
        assert server.pid == in_container[0].pid, "the server's host pid, found through docker inspect"
        with GrpcClient(server.grpc_target, TINY_MODEL_NAME, timeout_s=60) as client:
            assert client.model_status() == "AVAILABLE"
        info = server.info
        assert info["version"] == "2.18.0-rc0+dev.sha.abc123 (TensorFlow 2.18.0) in tensorflow/serving:2.18.0"
        assert info["tensorflow_version"] == "2.18.0"
        assert info["image"] == "tensorflow/serving:2.18.0"
        assert info["image_digest"] == "tensorflow/serving@sha256:" + "c" * 64  # the digest of the repository run
        assert info["image_id"] == "sha256:" + "b" * 64
        assert (info["gpu_used"], info["notes"]) == (False, [])
    assert gone(container_init) and gone(in_container[0].pid)
    calls = docker_calls(state)
    assert calls[0][:4] == ["run", "--rm", "--init", "--name"]
    assert calls[1:] == [
        ["exec", name, "tensorflow_model_server", "--version"],
        docker_container_inspect_command(spec, name)[1:],
        docker_image_inspect_command(spec, "sha256:" + "b" * 64)[1:],
        ["rm", "-f", name],  # after the stop, in case the container outlived its client
    ]
    assert docker_container_inspect_command(spec, name) == [
        str(docker),
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Pid}} {{.Image}}",
        name,
    ]
    assert docker_image_inspect_command(spec, "sha256:x") == [
        str(docker),
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        "sha256:x",
    ]


def test_docker_probes_that_fail_leave_nulls_and_notes_not_errors(tmp_path):
    state = tmp_path / "docker-state"
    spec = spec_for(tmp_path, backend="docker", docker_path=str(fake_docker(state, broken=True)), image_tag="2.18.0")
    command = build_command(spec, "docker", 1, 2, name="serveprof-tiny-x")
    facts = identify(spec, "docker", command, "serveprof-tiny-x", log_text="")
    assert facts.info["version"] == "tensorflow/serving:2.18.0"  # what is known: the image reference
    assert (facts.info["tensorflow_version"], facts.info["image_digest"], facts.info["image_id"]) == (None, None, None)
    assert facts.host_pid is None
    assert len(facts.info["notes"]) == 2
    assert all("Cannot connect to the Docker daemon" in note for note in facts.info["notes"])
    assert facts.info["notes"][0].startswith("version: `") and facts.info["notes"][1].startswith("container inspect: `")


def test_a_container_pid_that_is_not_a_local_server_is_not_sampled(tmp_path):
    """A remote Docker daemon's pid means nothing here: never sample whatever has that number locally."""
    assert probes.local_server_pid(os.getpid()) is None
    assert probes.local_server_pid(2**22 + 1) is None  # above pid_max: no such process


def test_apptainer_records_the_sif_digest_and_the_images_version(tmp_path):
    sif = tmp_path / "serving_2.18.0.sif"
    sif.write_bytes(b"not really a SIF, but bytes to hash")
    calls = tmp_path / "apptainer-calls"
    apptainer = executable_script(
        tmp_path / "bin" / "apptainer",
        f"""#!/bin/sh
echo "$@" >> {calls}
echo "TensorFlow ModelServer: 2.18.0-rc0+dev.sha.abc123"
echo "TensorFlow Library: 2.18.0"
""",
    )
    spec = spec_for(tmp_path, backend="apptainer", apptainer_path=str(apptainer), image=str(sif), gpu=True)
    command = build_command(spec, "apptainer", 8600, 8601)
    assert command[command.index("tensorflow_model_server") - 1] == str(sif)
    gpu_log = (
        "2026-11-25 10:00:00.1: I external/local_xla/xla/tsl/.../gpu_device.cc:2019] Created device "
        "/job:localhost/replica:0/task:0/device:GPU:0 with 14791 MB memory:  -> device: 0, name: Tesla T4"
    )
    facts = identify(spec, "apptainer", command, None, log_text=gpu_log)
    assert facts.info["version"] == f"2.18.0-rc0+dev.sha.abc123 (TensorFlow 2.18.0) in {sif}"
    assert facts.info["image"] == str(sif)
    assert facts.info["image_digest"] == "sha256:" + hashlib.sha256(sif.read_bytes()).hexdigest()
    assert (facts.info["gpu_requested"], facts.info["gpu_used"], facts.info["notes"]) == (True, True, [])
    assert calls.read_text() == f"exec {sif} tensorflow_model_server --version\n"


def test_apptainer_pulling_from_a_registry_has_no_digest_and_says_so(tmp_path):
    apptainer = executable_script(tmp_path / "bin" / "apptainer", "#!/bin/sh\nexit 255\n")
    spec = spec_for(tmp_path, backend="apptainer", apptainer_path=str(apptainer), image_tag="2.18.0")
    facts = identify(spec, "apptainer", build_command(spec, "apptainer", 1, 2), None, log_text="")
    assert facts.info["version"] == "docker://tensorflow/serving:2.18.0"
    assert facts.info["image_digest"] is None
    assert any("exited with status 255" in note for note in facts.info["notes"])
    assert any("no digest is recorded" in note for note in facts.info["notes"])


def test_an_unconfirmed_gpu_of_a_real_tf_serving_is_reported_as_unknown(tmp_path):
    spec = spec_for(tmp_path, gpu=True)
    used, note = gpu_status(
        spec, "docker", "I tensorflow_serving/model_servers/server.cc:445] Running gRPC ModelServer"
    )
    assert used is None and "TF_CPP_MIN_LOG_LEVEL" in note
    assert gpu_status(spec_for(tmp_path, gpu=False), "docker", "") == (False, None)


def test_the_embedded_gpu_probe_asks_the_servers_tensorflow():
    """The real probe: TensorFlow in its own process answers with the GPUs it sees (none on a CPU-only machine)."""
    output, note = run_probe(
        embedded_gpu_probe_command(), probes.GPU_PROBE_TIMEOUT_S, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    )
    assert note is None
    devices = json.loads(output.strip().splitlines()[-1])
    assert isinstance(devices, list) and all(name.startswith("/physical_device:GPU:") for name in devices)


def test_a_gpu_run_on_an_embedded_server_without_a_gpu_warns_and_records_it(model_copy, monkeypatch, caplog):
    # The probe answers as TensorFlow does on a machine without a usable GPU (as this one is, but a GPU
    # machine must not make the test fail): a list of no devices.
    monkeypatch.setattr(probes, "embedded_gpu_probe_command", lambda: [sys.executable, "-c", "print('[]')"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="serveprof.launch"):
        with launch(embedded(model_copy, gpu=True)) as server:
            assert (server.info["gpu_requested"], server.info["gpu_used"]) == (True, False)
            assert "CUDA_VISIBLE_DEVICES" not in psutil.Process(server.pid).environ()  # GPUs left visible
            assert any("sees no GPU" in note for note in server.info["notes"])
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(
        message.startswith(
            "WARNING: server.gpu is true, but TensorFlow in the embedded server's environment sees no GPU"
        )
        for message in warnings
    ), warnings

    monkeypatch.setattr(
        probes, "embedded_gpu_probe_command", lambda: [sys.executable, "-c", "print('[\"/physical_device:GPU:0\"]')"]
    )
    assert gpu_status(embedded(model_copy, gpu=True), "embedded", "") == (True, None)


def test_docker_without_a_client_is_refused_before_starting(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    spec = spec_for(tmp_path, backend="docker", docker_path=str(tmp_path / "no-docker"))
    with pytest.raises(ServeprofError, match="docker client not found(.|\n)*server.docker_path"):
        with launch(spec):
            pass


def test_server_settings_are_checked_with_the_schemas_fixes(tmp_path):
    with pytest.raises(ServeprofError, match="unknown key.*'backnd'(.|\n)*fix"):
        spec_of({"backnd": "embedded"}, "tiny", str(tmp_path))
    with pytest.raises(ServeprofError, match="server.backend(.|\n)*auto, embedded, tfserving, docker or apptainer"):
        spec_of({"backend": "kubernetes"}, "tiny", str(tmp_path))
    spec = spec_of({}, "tiny", str(tmp_path))
    assert (spec.backend, spec.image, spec.image_tag, spec.startup_timeout_s, spec.extra_flags) == (
        "auto",
        "tensorflow/serving",
        "latest",
        600,
        (),
    )

"""``serveprof serve`` as a process: its flags, version policy, start-up failures and shutdown.

Each test runs the real command; the ones that need a model wait for AVAILABLE the way
the launcher does (GetModelStatus over gRPC).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests

from serveprof.errors import ServeprofError
from serveprof.server.flags import ServerFlags, parse_flags
from tests.fixtures.embedded_server import (
    REPO,
    TFSERVING_TESTDATA,
    TINY_IMAGE_SIZE,
    export_tiny_classifier_version,
    free_port,
    serve_command,
    server_env,
)

QUICK_TIMEOUT_S = 60  # failures found before TensorFlow is imported
SLOW_TIMEOUT_S = 180  # failures found after it


def run_serve(*args: str, timeout: float = QUICK_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------ flags


def test_both_flag_spellings_parse_to_the_same_settings():
    spaced = parse_flags(
        [
            "--port",
            "9000",
            "--rest_api_port",
            "9001",
            "--model_name",
            "m",
            "--model_base_path",
            "/x",
            "--tensorflow_intra_op_parallelism",
            "2",
            "--file_system_poll_wait_seconds",
            "0",
        ]
    )
    joined = parse_flags(
        [
            "--port=9000",
            "--rest_api_port=9001",
            "--model_name=m",
            "--model_base_path=/x",
            "--tensorflow_intra_op_parallelism=2",
            "--file_system_poll_wait_seconds=0",
        ]
    )
    assert spaced == joined
    assert (joined.port, joined.rest_api_port, joined.model_name, joined.tensorflow_intra_op_parallelism) == (
        9000,
        9001,
        "m",
        2,
    )


def test_defaults_are_tensorflow_model_servers():
    flags = parse_flags(["--model_base_path=/x"])
    assert (flags.port, flags.rest_api_port, flags.model_name, flags.rest_api_timeout_in_ms) == (
        8500,
        0,
        "default",
        30000,
    )
    assert (flags.host, flags.max_request_bytes) == ("127.0.0.1", 256 << 20)
    assert (flags.enable_model_warmup, flags.enable_batching, flags.enable_serialization_as_tensor_content) == (
        True,
        False,
        False,
    )
    assert flags.saved_model_tags == "serve"
    assert flags == ServerFlags(model_base_path="/x")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model_base_path=/x", "--no_such_flag=1"], "unknown flag --no_such_flag"),
        (
            ["--model_base_path=/x", "--model_config_file=c.txt"],
            "--model_config_file is a tensorflow_model_server flag",
        ),
        (["--model_base_path=/x", "--port=eighty"], "--port='eighty' is not an integer"),
        (["--model_base_path=/x", "--port"], "flag --port needs a value"),
        (["--model_base_path=/x", "--port=0"], "--port=0"),
        (["--model_base_path=/x", "--port=8500", "--rest_api_port=8500"], "--rest_api_port and --port are both 8500"),
        (
            ["--model_base_path=/x", "--enable_batching=true", "--batching_parameters_file=b.txt"],
            "--batching_parameters_file=b.txt: no such file",
        ),
        (
            ["--model_base_path=/x", "--batching_parameters_file=b.txt"],
            "batching_parameters_file is set without setting server_options.enable_batching to true",
        ),
        (["--model_base_path=/x", "--monitoring_config_file=m.txt"], "--monitoring_config_file=m.txt: no such file"),
        (["--model_base_path=/x", "--saved_model_tags=,"], "--saved_model_tags is empty"),
        (["--model_base_path=/x", "--num_request_iterations_for_warmup=-1"], "is negative"),
        (["--model_base_path=/x", "--max_request_bytes=10"], "--max_request_bytes=10 is out of range"),
        (["--model_name=m"], "--model_base_path is required"),
        (["models/m"], "takes only flags"),
    ],
)
def test_bad_flags_are_refused_by_name(argv, words):
    with pytest.raises(ServeprofError) as caught:
        parse_flags(argv)
    assert words in str(caught.value) and caught.value.fix


def test_enable_batching_false_is_accepted():
    assert parse_flags(["--model_base_path=/x", "--enable_batching=false"]).enable_batching is False
    assert parse_flags(["--model_base_path=/x", "--enable_batching", "false"]).enable_batching is False


def test_unknown_flag_exits_non_zero_naming_it():
    result = run_serve(*serve_command(REPO, "--frobnicate=3"))
    assert result.returncode != 0
    assert "unknown flag --frobnicate" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "flag, text, words",
    [
        ("--batching_parameters_file", "max_batch_size { valu: 3 }", "Invalid protobuf file"),
        (
            "--batching_parameters_file",
            "max_batch_size { value: 8 }\nallowed_batch_sizes: 4",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8",
        ),
        ("--batching_parameters_file", "num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
        (
            "--monitoring_config_file",
            "prometheus_config { enabled: true }",
            "Error parsing text-format tensorflow.serving.MonitoringConfig",
        ),
    ],
)
def test_bad_option_files_fail_before_tensorflow_loads(tmp_path, flag, text, words):
    """The files are read first, as server.cc reads them, so a typo fails in well under TensorFlow's import time."""
    option_file = tmp_path / "options.txt"
    option_file.write_text(text)
    base = TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu"
    result = run_serve(*serve_command(base, "--enable_batching", f"{flag}={option_file}"))
    assert result.returncode != 0
    assert words in result.stderr and "fix:" in result.stderr and "Traceback" not in result.stderr


def test_version_prints_the_tensorflow_version():
    from importlib.metadata import version

    result = run_serve(*serve_command(REPO)[:4], "--version")
    assert result.returncode == 0, result.stderr
    assert f"TensorFlow Library: {version('tensorflow')}" in result.stdout
    assert result.stdout.startswith("TensorFlow ModelServer: serveprof-embedded-")


# ------------------------------------------------------------------ start-up failures


def test_missing_base_path_fails_clearly(tmp_path):
    result = run_serve(*serve_command(tmp_path / "absent"))
    assert result.returncode != 0
    assert f"model base path {tmp_path / 'absent'} does not exist" in result.stderr and "Traceback" not in result.stderr


def test_base_path_without_a_numeric_version_fails_clearly(tmp_path):
    (tmp_path / "m" / "latest").mkdir(parents=True)
    (tmp_path / "m" / "v2").mkdir()
    result = run_serve(*serve_command(tmp_path / "m"))
    assert result.returncode != 0
    assert "no numeric version directory under" in result.stderr and "latest, v2" in result.stderr


def test_corrupt_saved_model_fails_clearly_and_exits(tmp_path):
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"\x0a\xff\xff this is not a SavedModel")
    result = run_serve(*serve_command(tmp_path / "m", "--port", str(free_port())), timeout=SLOW_TIMEOUT_S)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Failed to start server" in result.stderr and f"cannot load the SavedModel in {version_dir}" in result.stderr


@pytest.mark.parametrize("which", ["--port", "--rest_api_port"])
def test_port_in_use_fails_clearly(tiny_classifier_base, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = (
            {"--port": busy, "--rest_api_port": free_port()}
            if which == "--port"
            else {"--port": free_port(), "--rest_api_port": busy}
        )
        started = time.monotonic()
        result = run_serve(
            *serve_command(tiny_classifier_base, grpc_port=ports["--port"], rest_port=ports["--rest_api_port"]),
            timeout=SLOW_TIMEOUT_S,
        )
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"port {busy} is already in use; choose another {which}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "TensorFlow 2" not in result.stderr, "the ports are tried before the model loads, not after"
    assert time.monotonic() - started < QUICK_TIMEOUT_S


def test_ports_open_only_once_the_model_is_available(tiny_classifier_base, tmp_path):
    """As tensorflow_model_server: a client connecting during start-up is refused, never told NOT_FOUND."""
    grpc_port, rest_port = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            serve_command(tiny_classifier_base, grpc_port=grpc_port, rest_port=rest_port),
            cwd=REPO,
            env=server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        refused = 0
        deadline = time.monotonic() + SLOW_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
                break
            except ConnectionRefusedError:
                refused += 1
                time.sleep(0.05)
        log_text = log_path.read_text()
        assert refused > 0 and "is AVAILABLE" in log_text, log_text[-2000:]
        for _ in range(100):  # the port accepts a moment before its log line is written
            if "Running gRPC ModelServer" in log_text:
                break
            time.sleep(0.05)
            log_text = log_path.read_text()
        assert log_text.index("is AVAILABLE") < log_text.index("Running gRPC ModelServer"), log_text[-2000:]
        from serveprof.client import GrpcClient

        with GrpcClient(f"127.0.0.1:{grpc_port}", "tiny", timeout_s=30) as client:
            assert client.model_status(timeout_s=30) == "AVAILABLE"
    finally:
        process.kill()
        process.wait(timeout=30)


# ------------------------------------------------------------------ running servers


def grpc_predict(target: str, batch: np.ndarray):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
    with grpc.insecure_channel(target) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


def test_highest_numeric_version_is_served(tmp_path, start_embedded_server):
    import tensorflow as tf

    base = tmp_path / "tiny"
    export_tiny_classifier_version(base / "1", seed=1)
    export_tiny_classifier_version(base / "3", seed=3)
    (base / "10.bak").mkdir()  # not a version: TF Serving takes all-digit names only
    (base / "20").write_text("a file, not a version directory")
    server = start_embedded_server(base)
    batch = np.random.default_rng(0).random((2, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), dtype=np.float32)
    response = grpc_predict(server.grpc_target, batch)
    assert response.model_spec.version.value == 3
    version_3 = tf.saved_model.load(str(base / "3")).signatures["serving_default"]
    version_1 = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    got = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(got, version_3(images=tf.constant(batch))["probabilities"].numpy(), rtol=1e-6)
    assert not np.allclose(got, version_1(images=tf.constant(batch))["probabilities"].numpy())
    metadata = requests.get(f"{server.rest_url}/v1/models/tiny/metadata", timeout=30).json()
    assert metadata["model_spec"]["version"] == "3"
    assert requests.get(f"{server.rest_url}/v1/models/tiny/versions/1", timeout=30).status_code == 404


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_within_two_seconds(tiny_classifier_base, start_embedded_server, signal_number):
    server = start_embedded_server(tiny_classifier_base)
    started = time.monotonic()
    server.process.send_signal(signal_number)
    code = server.process.wait(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, server.log()[-2000:]
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert "shutting down" in server.log()


@pytest.fixture(scope="module")
def spinner_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("spinner") / "spinner"
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", "spinner", str(base / "1")],
        check=True,
        cwd=REPO,
        env=server_env(),
        timeout=300,
        capture_output=True,
    )
    return base


def test_rest_timeout_is_a_deadline_on_the_session_run(spinner_base, start_embedded_server):
    """--rest_api_timeout_in_ms becomes RunOptions.timeout_in_ms, as in TF Serving's REST handler: 504."""
    server = start_embedded_server(spinner_base, "--rest_api_timeout_in_ms=300")
    url = f"{server.rest_url}/v1/models/tiny:predict"
    started = time.monotonic()
    answer = requests.post(url, json={"inputs": {"iterations": 10**7}}, timeout=60)
    assert answer.status_code == 504, answer.text
    assert answer.json() == {"error": "Timed out waiting for notification"}
    assert time.monotonic() - started < 10
    assert requests.post(url, json={"inputs": {"iterations": 10}}, timeout=60).status_code == 200


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_sigterm_lets_a_request_in_flight_finish(spinner_base, start_embedded_server, api):
    from serveprof.client import GrpcClient

    server = start_embedded_server(spinner_base)
    url = f"{server.rest_url}/v1/models/tiny:predict"
    # Both connections are opened (and accepted) before the signal: a connection still in
    # the listen backlog when the server stops is refused, as by any server.
    session = requests.Session()
    grpc_client = GrpcClient(server.grpc_target, "tiny", timeout_s=60)

    def spin(iterations: int):
        if api == "rest":
            answer = session.post(url, json={"inputs": {"iterations": iterations}}, timeout=60)
            answer.raise_for_status()
            return answer.status_code
        return grpc_client.predict({"iterations": np.array(iterations, np.int32)})["total"].shape

    spin(10)
    started = time.monotonic()
    spin(2000)
    iterations = max(2000, int(2000 * 0.6 / (time.monotonic() - started)))  # about 0.6 s
    answers: dict[str, object] = {}
    caller = threading.Thread(target=lambda: answers.update({api: spin(iterations)}))
    caller.start()
    time.sleep(0.2)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=30)
    caller.join(30)
    session.close()
    grpc_client.close()
    assert code == 0, server.log()[-2000:]
    assert time.monotonic() - signalled < 2.0
    assert answers == {api: 200 if api == "rest" else ()}, server.log()[-2000:]


def test_rest_api_port_zero_turns_rest_off(tiny_classifier_base, start_embedded_server):
    server = start_embedded_server(tiny_classifier_base, rest=False)
    assert "--rest_api_port=0" in server.command
    batch = np.zeros((1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), np.float32)
    assert grpc_predict(server.grpc_target, batch).outputs["probabilities"].tensor_shape.dim[1].size == 3
    import psutil

    listening = {
        conn.laddr.port
        for conn in psutil.Process(server.pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert listening == {server.grpc_port}
    assert "REST API off" in server.log()


def test_log_has_timestamps_and_an_available_line(embedded_server):
    lines = [line for line in embedded_server.log().splitlines() if "serveprof-serve]" in line]
    assert lines and all(line[:4].isdigit() and line[4] == "-" for line in lines)
    assert any("model 'tiny' is AVAILABLE" in line for line in lines)

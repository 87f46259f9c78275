"""Interruptions leave no server running and nothing half-written that looks like a result.

Real processes throughout: ``serveprof measure`` launching its own embedded server on a
tiny classifier, and the real Snakemake workflow on a config holding only that model.
Each test interrupts a measurement while it runs (SIGKILL, SIGTERM or Ctrl-C of the
launcher, Ctrl-C of Snakemake, SIGKILL of a job, SIGKILL of the server) and then
counts server processes with psutil. A server process is one whose command line holds
``serveprof serve`` and that belongs to this test (its command line names the test's
temp directory, or its working directory is inside it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from serveprof.settings import canonical_json
from tests.fixtures.embedded_server import TINY_IMAGE_SIZE, TINY_MODEL_NAME
from tests.workflow_runner import REPO, run_workflow, workflow_command, workflow_env, write_config

pytestmark = pytest.mark.slow

MODEL = TINY_MODEL_NAME
IMAGE = TINY_IMAGE_SIZE
GONE_WITHIN_S = 5  # a server must vanish this soon after its launcher does
SERVER_UP_WITHIN_S = 240
TIMED_LOOP_STARTED = "timing up to"  # what serveprof measure logs as its timed loop begins
LONG_MEASURE = {
    "requests": 10_000_000,
    "max_seconds": 600,
    "min_requests": 1,
    "warmup_requests": 1,
    "warmup_max_seconds": 1,
}
SHORT_MEASURE = {"requests": 5, "max_seconds": 5, "min_requests": 1, "warmup_requests": 1, "warmup_max_seconds": 1}


# ------------------------------------------------------------------------ processes


def processes(kind: str, root: Path) -> list[psutil.Process]:
    """Live ``serveprof <kind>`` processes that belong to the test directory ``root``."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        info = process.info
        command = " ".join(info["cmdline"] or [])
        if info["status"] == psutil.STATUS_ZOMBIE or f"serveprof {kind}" not in command:
            continue
        if str(root) in command or (info["cwd"] or "").startswith(str(root)):
            found.append(process)
    return found


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def timing(log: Path, root: Path, timeout: float = SERVER_UP_WITHIN_S) -> psutil.Process:
    """Wait until the measurement logging to ``log`` is in its timed loop; return its server."""
    wait_for(
        lambda: log.exists() and TIMED_LOOP_STARTED in log.read_text(errors="replace"),
        timeout,
        f"{TIMED_LOOP_STARTED!r} in {log}",
    )
    servers = processes("serve", root)
    assert len(servers) == 1, servers
    return servers[0]


def assert_no_server_left(root: Path) -> None:
    started = time.monotonic()
    try:
        wait_for(lambda: not processes("serve", root), GONE_WITHIN_S, "the server to go")
        print(
            f"[{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}] no server left after {time.monotonic() - started:.2f} s"
        )
    finally:
        for leftover in processes("serve", root):  # never leak one, even when failing
            leftover.kill()


def stop(process: subprocess.Popen) -> None:
    """Teardown for a test's own process group: whatever is still running is killed."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def result_files(folder: Path, batch: int) -> list[str]:
    """Latency and stats files of the batch in ``folder``, atomic writes' temporaries included."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if f"b{batch}" in path.name and (".csv" in path.name or ".json" in path.name)
    )


# ------------------------------------------------------------------- the config


def workflow_config(saved_model: Path, measure: dict) -> dict:
    return {
        "models": {
            MODEL: {
                "source": "saved_model",
                "type": "classification",
                "path": str(saved_model),
                "input_size": [IMAGE, IMAGE],
            }
        },
        "batch_sizes": [1],
        "measure": measure,
        "server": {"backend": "embedded", "startup_timeout_s": 180},
        "plots": {"formats": ["png"], "dpi": 60},
    }


# ----------------------------------------------------------- the launcher, alone


def as_from_a_terminal() -> None:
    """Ctrl-C's default disposition, as a shell gives a foreground command: a test run that was
    itself started in the background (``cmd &`` without job control) inherits SIGINT ignored,
    and the Ctrl-C tests would then test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_measure(base: Path, out: Path) -> subprocess.Popen:
    command = [
        "serveprof",
        "measure",
        "--model",
        MODEL,
        "--model-base-path",
        str(base),
        "--batch-size",
        "1",
        "--server",
        canonical_json({"backend": "embedded", "startup_timeout_s": 180}),
        "--input",
        canonical_json({"kind": "random", "seed": 0}),
        "--protocol",
        "grpc",
        "--requests",
        str(LONG_MEASURE["requests"]),
        "--max-seconds",
        str(LONG_MEASURE["max_seconds"]),
        "--min-requests",
        "1",
        "--warmup-requests",
        "1",
        "--warmup-max-seconds",
        "1",
        "--latencies",
        str(out / f"{MODEL}-b1.csv"),
        "--stats",
        str(out / "stats" / "b1.json"),
    ]
    log = open(out / "measure.log", "wb")  # noqa: SIM115 - the child writes it; our handle closes below
    try:
        return subprocess.Popen(
            command,
            cwd=out,
            env=workflow_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
    finally:
        log.close()


@pytest.fixture
def measuring(tiny_classifier_base, tmp_path):
    """A ``serveprof measure`` in the middle of its timed loop, with its own server."""
    out = tmp_path / "results"
    out.mkdir()
    process = start_measure(tiny_classifier_base, out)
    try:
        server = timing(out / "measure.log", out)
        assert process.poll() is None, (out / "measure.log").read_text()[-3000:]
        yield process, server, out
    finally:
        stop(process)
        for leftover in processes("serve", out):
            leftover.kill()


def test_sigkill_of_the_launcher_takes_its_server_down(measuring):
    process, server, out = measuring
    process.kill()
    process.wait(timeout=10)
    assert_no_server_left(out)
    assert not (out / f"{MODEL}-b1.csv").exists() and not (out / "stats" / "b1.json").exists()


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_termination_of_the_launcher_is_prompt_and_clean(measuring, how):
    process, server, out = measuring
    if how == "SIGTERM":
        process.terminate()  # what Snakemake and `kill` send
    else:
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends: the whole foreground group
    signalled = time.monotonic()
    try:
        returncode = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serveprof measure still running 10 s after {how}")
    print(f"serveprof measure exited {time.monotonic() - signalled:.2f} s after {how}")
    assert returncode != 0, "an interrupted measurement must not report success"
    assert_no_server_left(out)
    assert result_files(out, 1) == [], "an interrupted measurement left result files"


# --------------------------------------------------------------------- the workflow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_classifier_base) -> Path:
    """One workflow directory for the module: acquisition and export run once."""
    return tmp_path_factory.mktemp("interrupted-workflow")


def start_workflow(workdir: Path, tiny_classifier_base: Path) -> subprocess.Popen:
    write_config(workdir, workflow_config(tiny_classifier_base / "1", LONG_MEASURE))
    log = open(workdir / "snakemake.out", "wb")  # noqa: SIM115 - owned by the child; closed with it
    try:
        return subprocess.Popen(
            workflow_command(workdir),
            cwd=REPO,
            env=workflow_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
    finally:
        log.close()


@pytest.fixture
def workflow_measuring(workdir, tiny_classifier_base):
    """Snakemake running the workflow, caught while its measurement job measures."""
    folder = workdir / "workload" / "profiling" / MODEL
    for stale in result_files(folder, 1) if folder.exists() else []:
        (folder / stale).unlink()  # each test interrupts a measurement of its own
    (workdir / "logs" / "measure_batch" / f"{MODEL}-b1.log").unlink(missing_ok=True)  # its marker must be this run's
    snakemake = start_workflow(workdir, tiny_classifier_base)
    try:
        measure = wait_for(lambda: processes("measure", workdir), SERVER_UP_WITHIN_S, "the measure job")[0]
        server = timing(workdir / "logs" / "measure_batch" / f"{MODEL}-b1.log", workdir)
        assert snakemake.poll() is None, (workdir / "snakemake.out").read_text()[-3000:]
        yield snakemake, measure, server
    finally:
        stop(snakemake)
        for leftover in processes("measure", workdir) + processes("serve", workdir):
            leftover.kill()


def snakemake_exit(snakemake: subprocess.Popen, workdir: Path, timeout: float = 120) -> int:
    try:
        return snakemake.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"snakemake still running {timeout} s later:\n" + (workdir / "snakemake.out").read_text()[-3000:])


def assert_no_interrupted_results(workdir: Path) -> None:
    folder = workdir / "workload" / "profiling" / MODEL
    left = result_files(folder, 1) if folder.exists() else []
    assert left == [], f"the interrupted (model, batch) left files: {left}"


def assert_rerun_recovers(workdir: Path, tiny_classifier_base: Path) -> None:
    write_config(workdir, workflow_config(tiny_classifier_base / "1", SHORT_MEASURE))
    rerun = run_workflow(workdir, timeout=900)
    assert rerun.returncode == 0, rerun.output[-6000:]
    assert {"model": MODEL, "batch": "1"} in rerun.jobs_of("measure_batch")
    latencies = (workdir / "workload" / "profiling" / MODEL / f"{MODEL}-b1.csv").read_text().split()
    assert len(latencies) >= 1 and all(float(value) > 0 for value in latencies)
    assert (workdir / "workload" / "profiling" / "all").is_file()
    assert not processes("serve", workdir)


def test_ctrl_c_of_snakemake_stops_the_measurement_and_its_server(workflow_measuring, workdir):
    snakemake, measure, server = workflow_measuring
    os.killpg(snakemake.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
    returncode = snakemake_exit(snakemake, workdir)
    assert returncode != 0
    assert_no_server_left(workdir)
    assert not processes("measure", workdir)
    assert_no_interrupted_results(workdir)


def test_a_killed_measure_job_leaves_no_server_and_a_rerun_recovers(workflow_measuring, workdir, tiny_classifier_base):
    snakemake, measure, server = workflow_measuring
    measure.kill()
    returncode = snakemake_exit(snakemake, workdir)
    assert returncode != 0, "snakemake must report the killed job"
    assert_no_server_left(workdir)
    assert_no_interrupted_results(workdir)
    assert_rerun_recovers(workdir, tiny_classifier_base)


def test_a_server_crash_fails_the_job_quickly_with_the_server_log(workflow_measuring, workdir, tiny_classifier_base):
    snakemake, measure, server = workflow_measuring
    killed_at = time.monotonic()
    server.kill()
    returncode = snakemake_exit(snakemake, workdir)
    took = time.monotonic() - killed_at
    print(f"snakemake exited {took:.1f} s after the server was killed")
    assert returncode != 0
    assert took < LONG_MEASURE["max_seconds"] / 10, f"the job took {took:.0f} s to notice its server died"
    job_log = (workdir / "logs" / "measure_batch" / f"{MODEL}-b1.log").read_text()
    assert f"(pid {server.pid}) exited with signal 9" in job_log, job_log[-3000:]
    # The server's own log lines (the embedded server's prefix), up to the model being served.
    assert "serveprof-serve]" in job_log and "is AVAILABLE" in job_log, job_log[-3000:]
    assert "Traceback" not in job_log
    assert not processes("measure", workdir)
    assert_no_interrupted_results(workdir)
    assert_rerun_recovers(workdir, tiny_classifier_base)

"""``serveprof serve``: run the embedded TF-Serving-compatible server until SIGTERM/SIGINT.

Start-up order, and why:
1. flags and the version directory are checked first, so a typo fails in milliseconds;
2. TensorFlow is imported and the gRPC and REST ports are bound; the model is then
   loaded while GetModelStatus already answers (START, then LOADING), so a launcher can
   poll for AVAILABLE;
3. AVAILABLE is logged once the SavedModel is loaded.
All of that runs on a worker thread: the main thread only waits for a signal, so
SIGTERM is handled at once even while TensorFlow is busy in C++ code.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from serveprof.errors import ServeprofError
from serveprof.server.flags import ServerFlags, parse_flags, usage

log = logging.getLogger("serveprof.serve")

SHUTDOWN_GRACE_S = 1.0  # in-flight requests get this long; the whole exit stays under 2 s


def main(argv: list[str]) -> int:
    flags = parse_flags(argv)
    if flags.help:
        print(usage())
        return 0
    if flags.version:
        print(version_text())
        return 0
    _configure_logging()
    from serveprof.server.servable import ModelHost, find_served_version

    version, path = find_served_version(flags.model_base_path)
    host = ModelHost(flags.model_name, version, path)
    return _serve(flags, host)


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from serveprof import __version__

    try:
        tensorflow = version("tensorflow")
    except PackageNotFoundError:
        tensorflow = "not installed"
    return f"TensorFlow ModelServer: serveprof-embedded-{__version__}\nTensorFlow Library: {tensorflow}"


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s serveprof-serve] %(message)s",
                                           datefmt="%Y-%m-%d %H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


class _Running:
    """What start-up has brought up so far, so shutdown stops exactly that."""

    def __init__(self) -> None:
        self.grpc_server = None
        self.rest_server = None
        self.failure: str | None = None
        self.done = threading.Event()  # set on a signal or a start-up failure


def _serve(flags: ServerFlags, host) -> int:
    running = _Running()

    def on_signal(number, _frame):
        log.info("received %s, shutting down", signal.Signals(number).name)
        running.done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_start_up, args=(flags, host, running), name="startup", daemon=True).start()
    while not running.done.wait(timeout=0.5):  # a timed wait keeps signal handling prompt
        pass
    _shut_down(running)
    code = 1 if running.failure else 0
    if running.failure:
        log.error("%s", running.failure)
    log.info("exiting with status %d", code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Interpreter teardown with TensorFlow's threads alive (or a load still running in
    # C++) can take seconds or abort; nothing is left to flush, so leave at once.
    os._exit(code)


def _start_up(flags: ServerFlags, host, running: _Running) -> None:
    from serveprof.server.servable import State

    try:
        started = time.monotonic()
        log.info("serving model %r version %d from %s", host.name, host.version, host.path)
        _configure_tensorflow(flags)
        from serveprof.server.core import ServingCore
        from serveprof.server.grpc_api import start_grpc_server
        from serveprof.server.rest_http import start_rest_server
        from serveprof.server.servable import load_servable

        from serveprof.server.limits import Limits

        core = ServingCore(host, flags.max_request_bytes)
        limits = Limits.from_flags(flags, apis=2 if flags.rest_api_port else 1)
        running.grpc_server = start_grpc_server(core, flags.host, flags.port, flags.grpc_max_threads,
                                                flags.max_request_bytes, limits=limits)
        log.info("Running gRPC ModelServer at %s:%d ...", flags.host, flags.port)
        if flags.rest_api_port:
            running.rest_server = start_rest_server(core, flags.host, flags.rest_api_port, flags.rest_api_num_threads,
                                                    flags.rest_api_timeout_in_ms, flags.max_request_bytes,
                                                    limits=limits)
            log.info("Exporting HTTP/REST API at:%s:%d ...", flags.host, flags.rest_api_port)
        else:
            log.info("REST API off (--rest_api_port=0)")
        host.set_state(State.LOADING)
        servable = load_servable(host.path)
        host.set_state(State.AVAILABLE, servable=servable)
        log.info("Successfully loaded servable version {name: %s version: %d} in %.1f s; model %r is AVAILABLE "
                 "(signatures: %s)", host.name, host.version, time.monotonic() - started, host.name,
                 ", ".join(sorted(servable.signatures)))
    except ServeprofError as error:
        host.set_state(State.END, error=str(error))
        running.failure = f"Failed to start server. Error: {error}"
        running.done.set()
    except Exception as error:  # noqa: BLE001 - report any start-up failure, then exit non-zero
        log.exception("start-up failed")
        host.set_state(State.END, error=str(error))
        running.failure = f"Failed to start server. Error: {type(error).__name__}: {error}"
        running.done.set()


def _configure_tensorflow(flags: ServerFlags) -> None:
    import tensorflow as tf

    intra = flags.tensorflow_intra_op_parallelism or flags.tensorflow_session_parallelism
    inter = flags.tensorflow_inter_op_parallelism or flags.tensorflow_session_parallelism
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    log.info("TensorFlow %s; intra-op threads %s, inter-op threads %s", tf.__version__,
             intra or "auto", inter or "auto")


def _shut_down(running: _Running) -> None:
    """Stop accepting, then give requests in flight on either API the same grace, together."""
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    if running.rest_server is not None:
        running.rest_server.shutdown()
        running.rest_server.server_close()
    if running.grpc_server is not None:
        running.grpc_server.stop(SHUTDOWN_GRACE_S)
    if running.rest_server is not None and not running.rest_server.api.wait_idle(deadline - time.monotonic()):
        log.warning("REST requests still running after %.1f s; exiting anyway", SHUTDOWN_GRACE_S)

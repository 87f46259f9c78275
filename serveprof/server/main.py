"""``serveprof serve``: run the embedded TF-Serving-compatible server until SIGTERM/SIGINT.

Start-up order, and why (tensorflow_model_server's own, server.cc):
1. flags, the version directory, the batching and monitoring files are checked, and the
   ports tried, first, so a typo or a taken port fails in milliseconds;
2. TensorFlow is imported and the SavedModel loaded into a Session; the warm-up
   records, if any, are replayed (--enable_model_warmup, on by default as in TF Serving);
3. only then is the model AVAILABLE and are the gRPC and then the REST port opened, as
   TF Serving opens its ports only after ServerCore::Create has loaded the models. A
   client connecting earlier is refused, as by TF Serving, and retries.
The log says how long the load and the warm-up took, separately, and the metrics keep
them (:tensorflow:cc:saved_model:load_latency, :tensorflow:serving:model_warmup_latency).
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
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


def main(argv: list[str]) -> int:
    flags = parse_flags(argv)
    if flags.help:
        print(usage())
        return 0
    if flags.version:
        print(version_text())
        return 0
    _configure_logging()
    from serveprof.server.bind_errors import check_bindable
    from serveprof.server.servable import ModelHost, find_served_version

    version, path = find_served_version(flags.model_base_path, flags.prefer_tflite_model)
    host = ModelHost(flags.model_name, version, path)
    options = _read_option_files(flags)
    check_bindable(flags.host, flags.port, "--port")
    if flags.rest_api_port:
        check_bindable(flags.host, flags.rest_api_port, "--rest_api_port")
    return _serve(flags, host, options)


class _OptionFiles:
    """What the batching and monitoring files say, read before TensorFlow is imported."""

    def __init__(self, batching, metrics_path: str | None):
        self.batching = batching  # BatchingOptions, or None without --enable_batching
        self.metrics_path = metrics_path  # the Prometheus page's path, or None


def _read_option_files(flags: ServerFlags) -> _OptionFiles:
    from serveprof.server.batching import batching_options
    from serveprof.server.config_protos import parse_text_file

    batching = None
    if flags.enable_batching:
        parameters = (
            parse_text_file(flags.batching_parameters_file, "BatchingParameters", "--batching_parameters_file")
            if flags.batching_parameters_file
            else None
        )
        batching = batching_options(parameters)
    metrics_path = None
    if flags.monitoring_config_file:
        config = parse_text_file(flags.monitoring_config_file, "MonitoringConfig", "--monitoring_config_file")
        if config.prometheus_config.enable:
            metrics_path = config.prometheus_config.path or PROMETHEUS_PATH
    return _OptionFiles(batching, metrics_path)


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
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)s serveprof-serve] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
        )
    )
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


def _serve(flags: ServerFlags, host, options: _OptionFiles) -> int:
    running = _Running()

    def on_signal(number, _frame):
        log.info("received %s, shutting down", signal.Signals(number).name)
        running.done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_start_up, args=(flags, host, options, running), name="startup", daemon=True).start()
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


def _start_up(flags: ServerFlags, host, options: _OptionFiles, running: _Running) -> None:
    from serveprof.server.servable import State

    try:
        started = time.monotonic()
        log.info("serving model %r version %d from %s", host.name, host.version, host.path)
        config = _session_config(flags)
        from serveprof.server.core import RunSettings, ServingCore
        from serveprof.server.grpc_api import start_grpc_server
        from serveprof.server.limits import Limits
        from serveprof.server.metrics import Metrics
        from serveprof.server.rest_http import start_rest_server
        from serveprof.server.warmup import run_warmup

        limits = Limits.from_flags(flags, apis=2 if flags.rest_api_port else 1)
        metrics = Metrics()
        settings = RunSettings(
            tensor_content=flags.enable_serialization_as_tensor_content,
            check_method_name=flags.enable_signature_method_name_check,
            rest_timeout_ms=flags.rest_api_timeout_in_ms,
        )
        core = ServingCore(host, flags.max_request_bytes, settings, metrics, metrics_path=options.metrics_path)
        host.set_state(State.LOADING)
        tags = [tag for tag in flags.saved_model_tags.split(",") if tag]
        load_started = time.monotonic()
        try:
            servable, loaded = _load(flags, host.path, tags, config, options.batching, metrics)
        except BaseException:
            metrics.load(str(host.path), time.monotonic() - load_started, ok=False)
            raise
        load_s = time.monotonic() - load_started
        metrics.load(str(host.path), load_s, ok=True)
        log.info("Loaded %s in %.3f s", loaded, load_s)
        warmup_s, records = 0.0, 0
        if flags.enable_model_warmup:
            warmed = run_warmup(servable, host.path, flags.num_request_iterations_for_warmup, settings, metrics)
            if warmed is not None:
                warmup_s, records = warmed.seconds, warmed.records
        log.info("startup timings: load_s=%.6f warmup_s=%.6f warmup_records=%d", load_s, warmup_s, records)
        host.set_state(State.AVAILABLE, servable=servable)
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.1f s; model %r is AVAILABLE "
            "(signatures: %s; Predict answers in %s)",
            host.name,
            host.version,
            time.monotonic() - started,
            host.name,
            ", ".join(sorted(servable.signatures)),
            "tensor_content" if settings.tensor_content else "typed fields",
        )
        running.grpc_server = start_grpc_server(
            core, flags.host, flags.port, flags.grpc_max_threads, flags.max_request_bytes, limits=limits
        )
        log.info("Running gRPC ModelServer at %s:%d ...", flags.host, flags.port)
        if flags.rest_api_port:
            running.rest_server = start_rest_server(
                core,
                flags.host,
                flags.rest_api_port,
                flags.rest_api_num_threads,
                flags.rest_api_timeout_in_ms,
                flags.max_request_bytes,
                limits=limits,
            )
            log.info("Exporting HTTP/REST API at:%s:%d ...", flags.host, flags.rest_api_port)
            if options.metrics_path:
                log.info("Prometheus metrics at http://%s:%d%s", flags.host, flags.rest_api_port, options.metrics_path)
        else:
            log.info("REST API off (--rest_api_port=0)")
    except ServeprofError as error:
        host.set_state(State.END, error=str(error))
        running.failure = f"Failed to start server. Error: {error}"
        running.done.set()
    except Exception as error:  # noqa: BLE001 - report any start-up failure, then exit non-zero
        log.exception("start-up failed")
        host.set_state(State.END, error=str(error))
        running.failure = f"Failed to start server. Error: {type(error).__name__}: {error}"
        running.done.set()


def _load(flags: ServerFlags, path, tags: list[str], config, batching, metrics):
    """The servable, and what was loaded for the log: the TFLite model when preferred and present, else the SavedModel.

    As SavedModelBundleFactory decides it: --prefer_tflite_model with a model.tflite in
    the version directory loads that into TFLite interpreters; otherwise the SavedModel
    goes into a Session. A SavedModel that compiles with XLA is refused unless XLA's JIT
    was enabled (tensorflow_model_server disables it by default).
    """
    from serveprof.server.servable import load_servable, load_tflite_servable
    from serveprof.server.tflite_session import TFLITE_FILE, default_pools

    check = flags.enable_signature_method_name_check
    if flags.prefer_tflite_model and (path / TFLITE_FILE).is_file():
        pools = flags.num_tflite_pools or default_pools()
        servable = load_tflite_servable(path, pools, batching, metrics, check)
        return servable, f"TFLite model {path / TFLITE_FILE} into {pools} single-threaded interpreter(s)"
    servable = load_servable(path, tags, config, batching, metrics, check)
    if not (flags.xla_cpu_compilation_enabled or flags.xla_gpu_compilation_enabled):
        from serveprof.server.session_bundle import xla_functions

        compiled = xla_functions(servable.bundle.meta_graph_def)
        if compiled:
            servable.close()
            raise ServeprofError(
                f"the SavedModel in {path} compiles {len(compiled)} function(s) with XLA (jit_compile, e.g. "
                f"{compiled[0]}), and XLA's JIT is off, as in tensorflow_model_server by default",
                "start the server with --xla_cpu_compilation_enabled=true (--xla_gpu_compilation_enabled=true on a GPU)",
            )
    return servable, f"SavedModel {path} (tags {','.join(tags)}) into a Session"


def _session_config(flags: ServerFlags):
    import tensorflow as tf

    from serveprof.server.session_bundle import session_config

    config = session_config(
        flags.tensorflow_intra_op_parallelism,
        flags.tensorflow_inter_op_parallelism,
        flags.tensorflow_session_parallelism,
        flags.tensorflow_session_config_file,
    )
    log.info(
        "TensorFlow %s; Session intra-op threads %s, inter-op threads %s",
        tf.__version__,
        config.intra_op_parallelism_threads or "auto",
        config.inter_op_parallelism_threads or "auto",
    )
    return config


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

"""tensorflow_model_server's command line, as far as the embedded server supports it.

Names and defaults follow tensorflow_serving/model_servers/main.cc and server.h. Both
``--flag=value`` and ``--flag value`` are accepted; a boolean flag alone means true.
Flags of tensorflow_model_server that this server does not implement are refused by
name with a pointer to the real server, never silently ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from serveprof.errors import ServeprofError

MiB = 1 << 20
GRPC_MESSAGE_LIMIT = (1 << 31) - 1  # gRPC sizes are C ints
_CPUS = os.cpu_count() or 1


@dataclass
class ServerFlags:
    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    rest_api_num_threads: int = 4 * _CPUS
    rest_api_timeout_in_ms: int = 30000
    grpc_max_threads: int = 4 * _CPUS
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    tensorflow_session_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    monitoring_config_file: str = ""
    enable_serialization_as_tensor_content: bool = False
    saved_model_tags: str = "serve"
    enable_signature_method_name_check: bool = False
    prefer_tflite_model: bool = False
    num_tflite_pools: int = 0  # 0: the CPUs this process may use, TF Serving's default
    num_tflite_interpreters_per_pool: int = 1
    xla_cpu_compilation_enabled: bool = False
    xla_gpu_compilation_enabled: bool = False
    version: bool = False
    help: bool = False
    # Ours, not tensorflow_model_server's.
    host: str = "127.0.0.1"
    max_request_bytes: int = 256 * MiB
    max_connections: int = 1000
    handshake_timeout_ms: int = 10_000
    grpc_idle_timeout_ms: int = 300_000
    grpc_request_timeout_ms: int = 60_000
    max_queued_requests: int = 1024
    max_buffered_bytes: int = 0


HELP = {
    "port": "TCP port for the gRPC API (PredictionService, ModelService); must be non-zero",
    "rest_api_port": "TCP port for the HTTP/REST API; 0 turns REST off",
    "model_name": "name clients address the model by",
    "model_base_path": "directory holding numeric version directories (1/, 2/, ...); the highest is served",
    "rest_api_num_threads": "most REST requests processed at once",
    "rest_api_timeout_in_ms": "a REST request must arrive whole within this of its first byte; a kept-alive "
    "connection idle this long is closed",
    "grpc_max_threads": "threads serving gRPC requests",
    "tensorflow_intra_op_parallelism": "threads one TensorFlow op may use; 0 = TensorFlow's choice",
    "tensorflow_inter_op_parallelism": "TensorFlow ops run at once; 0 = TensorFlow's choice",
    "tensorflow_session_parallelism": "sets both parallelism flags above when they are 0",
    "tensorflow_session_config_file": "text-format tensorflow.ConfigProto for the Session (the flags above override it)",
    "file_system_poll_wait_seconds": "accepted for compatibility; the version is chosen once at start-up",
    "enable_batching": "server-side batching of requests (TF Serving's BatchingSession)",
    "batching_parameters_file": "text-format BatchingParameters; only with --enable_batching",
    "enable_model_warmup": "replay assets.extra/tf_serving_warmup_requests before the model is AVAILABLE",
    "num_request_iterations_for_warmup": "times each warm-up record is replayed; 0 = once",
    "monitoring_config_file": "text-format MonitoringConfig; prometheus_config serves metrics on the REST port",
    "enable_serialization_as_tensor_content": "Predict answers in tensor_content instead of the typed fields",
    "saved_model_tags": "comma-separated tags of the MetaGraphDef to load",
    "enable_signature_method_name_check": "check SignatureDef method names as TF Serving 1.x did",
    "prefer_tflite_model": "serve <version>/model.tflite with TensorFlow's TFLite interpreter when it exists, "
    "instead of the SavedModel",
    "num_tflite_pools": "TFLite interpreters (one thread each) serving requests side by side; 0 = one per CPU",
    "num_tflite_interpreters_per_pool": "interpreters per pool; only 1 (TF Serving's default) is supported",
    "xla_cpu_compilation_enabled": "allow models that compile with XLA (jit_compile) to run; off, such a model is "
    "refused at load",
    "xla_gpu_compilation_enabled": "the same, for XLA on GPUs (and CPUs)",
    "version": "print the server and TensorFlow versions and exit",
    "help": "print this help and exit",
    "host": "address to bind (serveprof's own flag; TF Serving binds all interfaces)",
    "max_request_bytes": "largest request body accepted, REST body and gRPC message alike (serveprof's own flag)",
    "max_connections": "open connections per API; at the cap the one idle longest is closed to admit a new one, "
    "and a new one is refused if none is idle (serveprof's own flag)",
    "handshake_timeout_ms": "a new connection must send the HTTP/2 preface and SETTINGS (gRPC) or its first "
    "request head (REST) within this (serveprof's own flag)",
    "grpc_idle_timeout_ms": "a gRPC connection with no call open this long gets GOAWAY and is closed "
    "(serveprof's own flag; grpc's max_connection_idle_ms)",
    "grpc_request_timeout_ms": "a gRPC request must arrive whole, and its answer be taken by the client, within "
    "this (or the call's grpc-timeout if shorter) (serveprof's own flag)",
    "max_queued_requests": "requests per API waiting for a thread; more are answered RESOURCE_EXHAUSTED "
    "(REST: 429) (serveprof's own flag)",
    "max_buffered_bytes": "request bytes held in memory at once, both APIs together; a request that does not fit "
    "is answered RESOURCE_EXHAUSTED; 0 = twice --max_request_bytes (serveprof's own flag)",
}

# tensorflow_model_server flags the embedded server does not implement.
UNSUPPORTED = frozenset(
    {
        "grpc_socket_path",
        "rest_api_enable_cors_support",
        "allow_version_labels_for_unavailable_models",
        "enable_per_model_batching_parameters",
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "num_load_threads",
        "num_unload_threads",
        "max_num_load_retries",
        "load_retry_interval_micros",
        "flush_filesystem_caches",
        "use_alts_credentials",
        "ssl_config_file",
        "platform_config_file",
        "per_process_gpu_memory_fraction",
        "grpc_channel_arguments",
        "remove_unused_fields_from_bundle_metagraph",
        "enable_profiler",
        "thread_pool_factory_config_file",
        "mixed_precision",
        "skip_initialize_tpu",
        "enable_grpc_healthcheck_service",
    }
)

_TYPES = {field.name: field.type for field in fields(ServerFlags)}
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def usage() -> str:
    width = max(map(len, HELP)) + 2
    defaults = ServerFlags()
    lines = [
        "usage: serveprof serve --model_base_path=DIR [--model_name=NAME] [--port=8500] [--rest_api_port=8501] ...",
        "",
    ]
    for name, text in HELP.items():
        lines.append(f"  --{name.ljust(width)}{text} (default {getattr(defaults, name)!r})")
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> ServerFlags:
    """Parse and check ``argv``; raise ``ServeprofError`` naming the offending flag."""
    parsed = ServerFlags()
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg in ("-h", "--help", "-help"):
            parsed.help = True
            continue
        if not arg.startswith("--") or arg == "--":
            raise ServeprofError(
                f"serveprof serve takes only flags, got the argument {arg!r}",
                "write every option as --name=value (see serveprof serve --help)",
            )
        name, has_value, value = arg[2:].partition("=")
        if name in UNSUPPORTED:
            raise ServeprofError(
                f"--{name} is a tensorflow_model_server flag the embedded server does not support",
                "remove it, or use backend tfserving (the real tensorflow_model_server) for it",
            )
        if name not in _TYPES or name == "help":
            raise ServeprofError(f"unknown flag --{name}", "see serveprof serve --help for the flags it takes")
        kind = _TYPES[name]
        if kind == "bool":
            if not has_value and index < len(argv) and argv[index].lower() in _TRUE | _FALSE:
                value, has_value = argv[index], True
                index += 1
            setattr(parsed, name, _parse_bool(name, value) if has_value else True)
            continue
        if not has_value:
            if index >= len(argv):
                raise ServeprofError(f"flag --{name} needs a value", f"write --{name}=VALUE")
            value = argv[index]
            index += 1
        setattr(parsed, name, _parse_int(name, value) if kind == "int" else value)
    if not (parsed.help or parsed.version):
        _check(parsed)
    return parsed


def _parse_bool(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ServeprofError(f"--{name}={value} is not a boolean", f"write --{name}=true or --{name}=false")


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise ServeprofError(f"--{name}={value!r} is not an integer", f"give --{name} a whole number") from None


def _check(flags: ServerFlags) -> None:
    if not flags.model_base_path:
        raise ServeprofError(
            "--model_base_path is required",
            "point it at the directory holding the model's version directories (e.g. models/m, with models/m/1/saved_model.pb)",
        )
    if not flags.model_name:
        raise ServeprofError("--model_name is empty", "give the model the name clients will use, e.g. --model_name=m")
    for name in ("port", "rest_api_port"):
        port = getattr(flags, name)
        if not 0 <= port <= 65535:
            raise ServeprofError(f"--{name}={port} is not a TCP port", f"give --{name} a value from 1 to 65535")
    if flags.port == 0:
        raise ServeprofError(
            "--port=0: the gRPC API cannot be turned off (tensorflow_model_server requires it too)",
            "give --port a free TCP port, e.g. --port=8500",
        )
    if flags.rest_api_port == flags.port:
        raise ServeprofError(
            f"--rest_api_port and --port are both {flags.port}",
            "give the REST API a different port, or --rest_api_port=0 to turn REST off",
        )
    for name in (
        "rest_api_num_threads",
        "grpc_max_threads",
        "rest_api_timeout_in_ms",
        "max_connections",
        "handshake_timeout_ms",
        "grpc_idle_timeout_ms",
        "grpc_request_timeout_ms",
        "max_queued_requests",
    ):
        if getattr(flags, name) < 1:
            raise ServeprofError(
                f"--{name}={getattr(flags, name)} must be at least 1", f"give --{name} a positive number"
            )
    for name in (
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
        "tensorflow_session_parallelism",
        "file_system_poll_wait_seconds",
        "num_request_iterations_for_warmup",
        "num_tflite_pools",
    ):
        if getattr(flags, name) < 0:
            raise ServeprofError(f"--{name}={getattr(flags, name)} is negative", f"give --{name} 0 (automatic) or more")
    if not 1024 <= flags.max_request_bytes <= GRPC_MESSAGE_LIMIT:
        raise ServeprofError(
            f"--max_request_bytes={flags.max_request_bytes} is out of range",
            f"give a size from 1024 to {GRPC_MESSAGE_LIMIT} bytes (gRPC's limit)",
        )
    if flags.max_buffered_bytes and flags.max_buffered_bytes < flags.max_request_bytes:
        raise ServeprofError(
            f"--max_buffered_bytes={flags.max_buffered_bytes} is smaller than --max_request_bytes="
            f"{flags.max_request_bytes}: no request of the largest size could be held",
            "give --max_buffered_bytes at least --max_request_bytes, or 0 for twice it",
        )
    if flags.max_buffered_bytes < 0:
        raise ServeprofError(
            f"--max_buffered_bytes={flags.max_buffered_bytes} is negative",
            "give it 0 (twice --max_request_bytes) or a size in bytes",
        )
    if flags.batching_parameters_file and not flags.enable_batching:
        # tensorflow_model_server refuses this combination the same way (server.cc).
        raise ServeprofError(
            "server_options.batching_parameters_file is set without setting server_options.enable_batching to true.",
            "add --enable_batching, or drop --batching_parameters_file",
        )
    if flags.num_tflite_interpreters_per_pool != 1:
        raise ServeprofError(
            f"--num_tflite_interpreters_per_pool={flags.num_tflite_interpreters_per_pool}: the embedded server "
            "supports 1 interpreter per pool (TF Serving's default; more splits batches across them)",
            "drop the flag, or use backend tfserving (the real tensorflow_model_server) for it",
        )
    if not [tag for tag in flags.saved_model_tags.split(",") if tag]:
        raise ServeprofError("--saved_model_tags is empty", "give the tags of the MetaGraphDef to load, e.g. serve")
    for name in ("batching_parameters_file", "monitoring_config_file", "tensorflow_session_config_file"):
        path = getattr(flags, name)
        if path and not os.path.isfile(path):
            raise ServeprofError(f"--{name}={path}: no such file", f"point --{name} at an existing text-format file")


def response_serialization(argv: list[str]) -> str:
    """``tensor_content`` or ``typed_fields``: how a server started with ``argv`` writes Predict outputs.

    The flag is TF Serving's own, so this holds for every backend; measurements record it,
    since serialisation is part of what they time.
    """
    flag = "--enable_serialization_as_tensor_content"
    enabled = False
    for index, arg in enumerate(argv):
        if arg == flag:
            following = argv[index + 1].lower() if index + 1 < len(argv) else ""
            enabled = following not in ("false", "0")
        elif arg.startswith(flag + "="):
            enabled = arg.split("=", 1)[1].lower() in ("true", "1")
    return "tensor_content" if enabled else "typed_fields"

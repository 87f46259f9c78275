"""Arguments that several commands share: JSON flags, the server to launch, how the client talks to it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serveprof import settings
from serveprof.errors import ServeprofError
from serveprof.measure.inputs import AUTO, MODEL_TYPES
from serveprof.measure.session import PROTOCOLS, TRANSPORTS, external, launched
from serveprof.report.style import Style


def log(command: str, message: str) -> None:
    """A progress line on stderr, which the workflow sends to the job's log."""
    print(f"serveprof {command}: {message}", file=sys.stderr, flush=True)


def json_object(text: str, flag: str, example: str) -> dict:
    """The JSON object a flag holds; anything else is refused with an example."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ServeprofError(
            f"{flag} is not valid JSON ({error}): {text!r}", f"pass {flag} as a JSON object, e.g. {example}"
        ) from None
    if not isinstance(value, dict):
        raise ServeprofError(
            f"{flag} must be a JSON object, got {text!r}", f"pass {flag} as a JSON object, e.g. {example}"
        )
    return value


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The server to launch and the inputs to time it with."""
    parser.add_argument("--model-base-path", help="directory of the model's numeric versions (launch a server for it)")
    parser.add_argument(
        "--server", default="{}", help="the config's server: block as JSON; missing keys take the config's defaults"
    )
    parser.add_argument("--server-log", help="file for the launched server's output")
    parser.add_argument(
        "--input",
        default="{}",
        help='the config\'s measure.input block as JSON: {"kind": "auto"|"random"|"zeros"|"images", "seed": 0, '
        '"image_dir": null, "image_size": [H, W]}; missing keys take the config\'s defaults',
    )
    parser.add_argument(
        "--type",
        choices=(AUTO, *MODEL_TYPES),
        default=AUTO,
        help="the model's type, which resolves --input kind auto: images for detection, random for "
        "classification; auto (default) reads it from the served signature (detection when it "
        "has the Object Detection API's outputs, e.g. detection_boxes)",
    )


def name_value_pairs(values: list[str], flag: str, example: str) -> dict[str, str]:
    """``["a=x", "b=y"]`` -> ``{"a": "x", "b": "y"}``, refusing an item that is not NAME=VALUE."""
    pairs = {}
    for value in values:
        name, separator, target = value.partition("=")
        if not separator or not name or not target:
            raise ServeprofError(f"{flag} {value!r} is not NAME=VALUE", f"pass {flag} like {example}")
        pairs[name] = target
    return pairs


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    """The device whose limits the launched server runs under (a ``devices:`` entry)."""
    parser.add_argument(
        "--device",
        default="{}",
        help='the device as JSON: {"name": "edge", "cpus": 1, "memory": "2GiB", "intra_op_threads": 1, '
        '"inter_op_threads": 1}; {} (default) is the unconstrained host',
    )


def device_of(args):
    """The DeviceSettings of ``--device``; limits apply only to a server this command launches."""
    device = settings.device_settings(json_object(args.device, "--device", '{"name": "edge", "cpus": 1}'))
    if device.constrained and getattr(args, "address", None):
        raise ServeprofError(
            f"--device {device.name} sets limits, but --address names a server serveprof did not start",
            "limit that server yourself, or pass --model-base-path so serveprof launches one under the limits",
        )
    return device


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """How the client talks to the server: ``measure.protocol`` and ``measure.transport``."""
    defaults = settings.defaults("measure")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=defaults["protocol"],
        help="TF Serving's gRPC or REST API (measure.protocol; default %(default)s)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=defaults["transport"],
        help="builtin: serveprof's own HTTP/2 and HTTP/1.1 connections (least client CPU); "
        "library: grpcio for gRPC, requests for REST (measure.transport; default %(default)s)",
    )


def optional_number(text: str) -> float | None:
    """A number, or none/null/off for a check switched off."""
    if text.strip().lower() in ("none", "null", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor none") from None


def cpu_list(text: str) -> list[int] | None:
    """CPU numbers as ``0`` or ``0,1``; none/null for no pinning."""
    if text.strip().lower() in ("none", "null", "off"):
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of CPU numbers such as 0 or 0,1") from None


# The measure: keys of the disturbance sampler and the retries, by flag (measure and coldstart).
DISTURBANCE_FLAGS = {
    "max_foreign_cpu_pct": "max_foreign_cpu_pct",
    "max_steal_pct": "max_steal_pct",
    "max_memory_some_pct": "max_memory_some_pct",
    "disturbance_interval": "disturbance_interval_s",
    "retry_disturbed": "retry_disturbed",
    "retry_pause": "retry_pause_s",
}


def add_disturbance_flags(parser: argparse.ArgumentParser) -> None:
    """When a timed series counts as disturbed, and how often it is measured again (docs/measurement.md)."""
    defaults = settings.defaults("measure")
    for flag, number, what in (
        ("max-foreign-cpu-pct", optional_number, "CPU other processes may use, %% of one core; none: do not flag"),
        ("max-steal-pct", optional_number, "hypervisor steal, %% of CPU time; none: do not flag"),
        ("max-memory-some-pct", optional_number, "memory stalls (PSI some), %% of wall time; none: do not flag"),
        ("disturbance-interval", float, "machine sampling period in s"),
        ("retry-disturbed", int, "times a disturbed series is measured again on a fresh server"),
        ("retry-pause", float, "seconds to wait before measuring a disturbed series again"),
    ):
        key = DISTURBANCE_FLAGS[flag.replace("-", "_")]
        parser.add_argument(f"--{flag}", type=number, default=defaults[key], help=f"{what} (measure.{key})")


def disturbance_block(args) -> dict:
    return {key: getattr(args, flag) for flag, key in DISTURBANCE_FLAGS.items()}


def endpoint_for(args, server, metrics_path: str | None = None):
    """The server a command measures: the running one at ``--address``, or one launched for it (under
    ``--device``'s limits, with its Prometheus page at ``metrics_path`` when given)."""
    if args.address:
        return external(
            args.model,
            args.address,
            args.protocol,
            pid=args.pid,
            transport=args.transport,
            metrics_url=args.metrics_url,
        )
    return launched(
        args.model,
        args.model_base_path,
        server,
        args.protocol,
        log_path=args.server_log,
        transport=args.transport,
        metrics_path=metrics_path,
        device=device_of(args) if hasattr(args, "device") else None,
    )


def server_and_input(args) -> tuple:
    """The ServerSettings and InputSettings of ``--server`` and ``--input``."""
    server = settings.server_settings(json_object(args.server, "--server", '{"backend": "embedded"}'))
    inputs = settings.input_settings(json_object(args.input, "--input", '{"kind": "random", "seed": 0}'))
    return server, inputs


SPEC_EXAMPLE = '\'{"source": "tf2_zoo", "type": "detection", "url": "http://host/name.tar.gz"}\''


def model_spec(model: str, text: str) -> dict:
    """``--spec``: one model's config entry as JSON, checked as the config's is (same messages as check-config)."""
    return settings.model_definition(model, json_object(text, "--spec", SPEC_EXAMPLE))


def load_style(text: str | None) -> Style:
    """The Style of ``--style``: JSON text, or the path of a JSON file; None for the defaults."""
    if text is None:
        return settings.style()
    source = "--style"
    if not text.lstrip().startswith("{") and Path(text).is_file():
        source, text = text, Path(text).read_text(encoding="utf-8")
    try:
        block = json.loads(text)
    except json.JSONDecodeError as error:
        raise ServeprofError(
            f"{source} is not valid JSON ({error})",
            'pass the plots block as JSON, e.g. --style \'{"formats": ["png"], "dpi": 150}\'',
        ) from None
    if not isinstance(block, dict):
        raise ServeprofError(
            f"{source} holds a {type(block).__name__}, not a JSON object", "pass the plots block as a JSON object {...}"
        )
    return settings.style(block)

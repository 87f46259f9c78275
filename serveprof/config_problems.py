"""What is wrong with a config, in one sentence per problem with its fix.

The explanations come from the config schema (serveprof/schemas/config.schema.yaml),
which serveprof.settings loads and hands in: each schema node carries an ``x-fix``
string, the advice shown when a value there is invalid.

Beyond the schema, ``text_problems`` refuses what JSON Schema cannot express or lets
through: ``2.0`` where a whole number is meant, zoo URLs that are not a plain
``http(s)://host[:port]/.../<name>.tar.gz`` (the name becomes a file name), and two
models whose tarballs would share a file name. ``machine_problems`` looks at this
machine: missing folders, files and programs that a job would otherwise trip over much
later. Both only read the file system: no network, no TensorFlow, since they run
while the Snakefile is parsed.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from serveprof.errors import ServeprofError
from serveprof.launch.commands import SIF_SUFFIXES
from serveprof.models.archive import tarball_file_name

# Zoo tarballs are stored under the URL's last path segment (tarball_file_name, which
# serveprof.models.acquire uses), downloaded to "<name>.part" first, and opened as gzip (models/archive.py).
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
TARBALL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
TARBALL_NAME_MAX = 255 - len(".part")
HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
AUTHORITY = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>.*))?")
URL_FIX = (
    "give the plain http(s) URL of the model's tarball, ending in its file name, e.g. "
    "http://download.tensorflow.org/models/object_detection/tf2/20200711/<name>.tar.gz"
)
DOWNLOAD_DIR = "data/model/download"

BACKEND_PROGRAMS = {"tfserving": "tfserving_path", "docker": "docker_path", "apptainer": "apptainer_path"}
PROGRAM_FIXES = {
    "tfserving": "install TF Serving's tensorflow_model_server and set server.tfserving_path to it, or set "
    "server.backend to auto (which falls back to the embedded server) or embedded (docs/serving.md)",
    "docker": "install Docker and set server.docker_path to its client, or choose another server.backend "
    "(auto, embedded, tfserving, apptainer; docs/serving.md)",
    "apptainer": "load Apptainer before starting snakemake (e.g. `module load apptainer`) or set "
    "server.apptainer_path to it, or choose another server.backend (docs/serving.md, docs/hpc.md)",
}


def _key_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _problem(where: str, message: str, fix: str) -> str:
    return f"{where}: {message}\n    fix: {fix}"


def _models(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    models = config.get("models")
    if not isinstance(models, Mapping):
        return {}
    return {str(name): definition for name, definition in models.items() if isinstance(definition, Mapping)}


def _host_problem(host: str) -> str | None:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"its host {host} is not a valid IPv6 address"
        return None
    name = host.lower().removesuffix(".")
    labels = name.split(".")
    if not name:
        return "it has no host"
    if all(re.fullmatch(r"[0-9]+", label) for label in labels):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return f"its host {host!r} is not a valid IPv4 address"
        return None
    if len(name) > 253 or labels[-1].isdigit() or not all(HOST_LABEL.fullmatch(label) for label in labels):
        return (
            f"its host {host!r} is not a valid host name (ASCII letters, digits and '-' between dots, "
            "no part starting or ending with '-')"
        )
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a zoo tarball's URL, or None when it can.

    It must be ``http(s)://host[:port]/.../<name>.tar.gz`` (or ``.tgz``) with a valid
    host and port and no query or fragment, because ``<name>`` becomes the file name
    in data/model/download/ (``tarball_file_name``).
    """
    if not url.startswith(("http://", "https://")):
        return "it does not start with http:// or https://"
    if re.search(r"[\s\\\x00-\x1f\x7f]", url):
        return "it contains white space, a backslash or a control character"
    if "?" in url or "#" in url:
        return (
            "it has a query string or fragment ('?...' or '#...'), which would become part of the tarball's file name"
        )
    netloc, _, path = url.split("://", 1)[1].partition("/")
    if "@" in netloc:
        return "it has user credentials ('...@') before the host"
    authority = AUTHORITY.fullmatch(netloc)
    if authority is None:
        return f"{netloc!r} is not a host with an optional :port"
    problem = _host_problem(authority["host"])
    if problem:
        return problem
    port = authority["port"]
    if port is not None and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        return f"its port {port!r} is not a number from 1 to 65535"
    if path.endswith("/") or not path.strip("/"):
        return "its path does not end in a file name"
    name = tarball_file_name(url)
    if not TARBALL_NAME.fullmatch(name):
        return (
            f"its last segment {name!r} is not a plain file name (ASCII letters, digits, '.', '_', '-', '+' and "
            "'~', starting with a letter or digit), and it would be the tarball's file name"
        )
    if not name.lower().endswith(TARBALL_SUFFIXES):
        return f"its last segment {name!r} does not end in .tar.gz or .tgz (zoo models come as gzip-compressed tar archives)"
    if len(name) > TARBALL_NAME_MAX:
        return f"its last segment is {len(name)} characters long, more than a file name can hold ({TARBALL_NAME_MAX})"
    return None


def source_keys(schema: Mapping[str, Any]) -> dict[str, list[str]]:
    """The keys a model of each source takes, as the schema says (``not: {}`` refuses a key)."""
    model = schema["properties"]["models"]["additionalProperties"]
    taken = {}
    for branch in model["allOf"]:
        refused = branch["then"].get("properties", {})
        taken[branch["if"]["properties"]["source"]["const"]] = [
            key for key in model["properties"] if key not in refused
        ]
    return taken


def _is_other_source_key(error) -> bool:
    path = list(error.absolute_path)
    return error.validator == "not" and error.validator_value == {} and len(path) == 3 and path[0] == "models"


def _zoo_url_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[tuple[list[str], str]]:
    """Malformed zoo URLs, and different URLs whose tarballs would be the same file."""
    taken = source_keys(schema)
    problems: list[tuple[list[str], str]] = []
    owners: dict[str, tuple[str, str]] = {}
    for model, definition in _models(config).items():
        url, source = definition.get("url"), definition.get("source")
        if not isinstance(url, str) or (source in taken and "url" not in taken[source]):
            continue  # the schema explains a url that is missing, not text, or on a model of another source
        path = ["models", model, "url"]
        where = _key_path(path)
        problem = url_problem(url)
        if problem:
            problems.append((path, _problem(where, f"{url!r} is not a usable tarball URL: {problem}", URL_FIX)))
            continue
        if source != "tf2_zoo":
            continue
        name = tarball_file_name(url)
        # Compared without case: on macOS and Windows file systems x.tar.gz and X.tar.gz are one file.
        first_model, first_url = owners.setdefault(name.casefold(), (model, url))
        if first_url != url:
            problems.append(
                (
                    path,
                    _problem(
                        where,
                        f"its tarball would be stored as {DOWNLOAD_DIR}/{name}, the file of {_key_path(['models', first_model, 'url'])} "
                        f"({first_url}), a different URL",
                        f"give both models the same URL if it is the same tarball; otherwise remove one of the two models "
                        f"({DOWNLOAD_DIR}/ keeps one tarball per file name)",
                    ),
                )
            )
    return problems


def _fix_for(error, schema: Mapping[str, Any]) -> str:
    """The ``x-fix`` advice of the failing schema node, or of the nearest node above it."""
    node_path = list(error.absolute_schema_path)
    while True:
        node: Any = schema
        try:
            for part in node_path:
                node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
        if isinstance(node, dict):
            if "x-fix" in node:
                return node["x-fix"]
            if "$ref" in node:
                ref = node["$ref"].removeprefix("#/").split("/")
                target: Any = schema
                for part in ref:
                    target = target[part]
                if "x-fix" in target:
                    return target["x-fix"]
        if not node_path:
            return "see the comments in config/config.yaml"
        node_path.pop()


def _describe_type(error, schema: Mapping[str, Any]) -> tuple[str, str] | None:
    """Numbers written the wrong way: 2.0 or "2" for 2, true for a number, .nan or .inf."""
    value, wanted = error.instance, error.validator_value
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    if not wanted & {"integer", "number"}:
        return None
    fix = _fix_for(error, schema)
    if isinstance(value, bool):
        return f"{value!r} is a yes/no value (YAML reads true, yes and on as one), not a number", fix
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number", f"write a finite number; {fix}"
    if isinstance(value, float) and "integer" in wanted:
        if value.is_integer():
            return (
                f"{value!r} is written as a decimal number where a whole number is meant",
                f"write {int(value)}, not {value!r}; {fix}",
            )
        return f"{value!r} is not a whole number", fix
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return f"{value!r} is text (it is quoted), not a number", f"write {value.strip()} without quotes; {fix}"
    return None


def _describe(error, config: Mapping[str, Any], schema: Mapping[str, Any]) -> tuple[str, str]:
    """One schema error as (what is wrong, fix)."""
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known)) if isinstance(error.instance, dict) else []
        return f"unknown key(s) {', '.join(map(repr, extra))}; known keys are {', '.join(known)}", _fix_for(
            error, schema
        )
    if error.validator == "type":
        described = _describe_type(error, schema)
        if described:
            return described
    if _is_other_source_key(error):
        _, model, key = error.absolute_path
        source = config["models"][model]["source"]
        taken = source_keys(schema)
        owners = " and ".join(other for other, keys in taken.items() if key in keys)
        return (
            f"a {source} model does not take {key} ({key} is for {owners} models)",
            f"remove {key} (a {source} model takes {', '.join(taken[source])}), or set source to what the model is",
        )
    if "propertyNames" in error.absolute_schema_path:
        what = "device name" if list(error.absolute_schema_path)[:2] == ["properties", "devices"] else "model key"
        return f"{what} {error.instance!r} cannot be used as a directory name", _fix_for(error, schema)
    if error.validator == "exclusiveMinimum" and list(error.absolute_path)[-1:] == ["cpus"]:
        return f"{error.instance!r} CPUs leave the server nothing to run on", _fix_for(error, schema)
    return error.message, _fix_for(error, schema)


def validator_class():
    """Draft 2020-12 with a strict reading of numbers.

    JSON Schema counts 2.0 as an integer, and Python counts True as 1; a batch size of
    2.0 or true would pass and then break a job. Numbers must also be finite (YAML's
    .nan slips through every minimum).
    """
    import jsonschema

    def whole(_checker, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def finite(_checker, value) -> bool:
        return whole(_checker, value) or (isinstance(value, float) and math.isfinite(value))

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(
        base, type_checker=base.TYPE_CHECKER.redefine_many({"integer": whole, "number": finite})
    )


def text_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every problem in the text of ``config``, one sentence each with its fix; empty when valid.

    Nothing here looks at this machine (see ``machine_problems``), so it also checks
    config fragments that are used elsewhere, such as a job's ``server:`` block.
    """
    errors = list(validator_class()(schema).iter_errors(config))
    other_source_keys = {tuple(error.absolute_path) for error in errors if _is_other_source_key(error)}
    found: list[tuple[list[str], str]] = []
    for error in errors:
        path = tuple(error.absolute_path)
        # `if/then` failures repeat a `required` error found under them; keep the specific one.
        if error.validator in ("if", "allOf") and error.context:
            continue
        # A key of another source is explained as that alone, not also by its value.
        if path[:3] in other_source_keys and not _is_other_source_key(error):
            continue
        # A zoo URL's shape is explained by url_problem below, which says what is wrong with it.
        if error.validator == "pattern" and len(path) == 3 and path[0] == "models" and path[2] == "url":
            continue
        # A device's memory size is explained by _device_problems below, with its unit.
        if len(path) == 3 and path[0] == "devices" and path[2] == "memory":
            continue
        found.append(([str(part) for part in path], _problem(_key_path(path), *_describe(error, config, schema))))
    found += _zoo_url_problems(config, schema)
    found += _load_problems(config)
    found += _device_problems(config)
    return [text for _, text in sorted(found, key=lambda item: item[0])]


def _load_problems(config: Mapping[str, Any]) -> list[tuple[list[str], str]]:
    """What TF Serving would refuse in ``server.batching``, and what the schema cannot see in ``load:``."""
    from serveprof.load.scenarios import batching_problems, load_problems

    server = config.get("server")
    batching = server.get("batching") if isinstance(server, Mapping) else None
    found = batching_problems(batching) + load_problems(config.get("load"), batching, list(_models(config)))
    return [
        (where.replace("[", ".").replace("]", "").split("."), _problem(where, problem, fix))
        for where, problem, fix in found
    ]


def _devices(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    devices = config.get("devices")
    if not isinstance(devices, Mapping):
        return {}
    return {
        str(name): definition or {}
        for name, definition in devices.items()
        if isinstance(definition, (Mapping, type(None)))
    }


def _device_problems(config: Mapping[str, Any]) -> list[tuple[list[str], str]]:
    """Memory sizes without a usable unit, a constrained host, calibration profiles naming no device."""
    from serveprof.launch.device import MEMORY_EXAMPLE, memory_problem
    from serveprof.layout import HOST

    problems: list[tuple[list[str], str]] = []
    devices = _devices(config)
    for name, definition in devices.items():
        if "memory" in definition:
            problem = memory_problem(definition["memory"])
            if problem:
                path = ["devices", name, "memory"]
                problems.append(
                    (
                        path,
                        _problem(
                            _key_path(path),
                            problem,
                            f"write memory with its unit, e.g. {MEMORY_EXAMPLE} (KiB, MiB, GiB are binary; kB, MB, GB decimal)",
                        ),
                    )
                )
        if name == HOST and any(
            definition.get(key) is not None for key in ("cpus", "memory", "intra_op_threads", "inter_op_threads")
        ):
            path = ["devices", HOST]
            problems.append((path, _problem(
                _key_path(path),
                "host is the machine itself, unconstrained (its results are workload/profiling), but limits were given",
                "give the limits a device name of their own, e.g. devices: {edge: {cpus: 1}}, and leave host: {} as it is",
            )))  # fmt: skip
    calibration = config.get("calibration")
    profiles = calibration.get("profiles") if isinstance(calibration, Mapping) else None
    if isinstance(profiles, Mapping):
        known = sorted({HOST, *devices})
        for measured, device in profiles.items():
            if isinstance(device, str) and device not in known:
                path = ["calibration", "profiles", str(measured)]
                problems.append((path, _problem(
                    _key_path(path),
                    f"{device!r} is not a configured device (configured: {', '.join(known)})",
                    "name a device of the devices: block, or host",
                )))  # fmt: skip
    return problems


def _settings(config: Mapping[str, Any], schema: Mapping[str, Any], *block: str) -> dict:
    """``config[block[0]][block[1]]...`` over the schema's defaults; a mistyped block reads as empty."""
    node: Any = config
    for name in block:
        node = node.get(name) if isinstance(node, Mapping) else None
        schema = schema["properties"][name]
    defaults = {key: sub["default"] for key, sub in schema["properties"].items() if "default" in sub}
    return {**defaults, **(node if isinstance(node, Mapping) else {})}


def _saved_model_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for model, definition in _models(config).items():
        path = definition.get("path")
        if definition.get("source") != "saved_model" or not isinstance(path, str) or not path:
            continue
        from serveprof.models.saved_model_import import find_saved_model

        try:
            find_saved_model(path)
        except ServeprofError as error:
            problems.append(_problem(_key_path(["models", model, "path"]), error.problem, error.fix))
        except OSError as error:
            problems.append(
                _problem(
                    _key_path(["models", model, "path"]),
                    f"{path} cannot be read ({error.strerror})",
                    "make the SavedModel directory readable, or set path to another one",
                )
            )
    return problems


def _image_dir_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    settings = _settings(config, schema, "measure", "input")
    image_dir, kind = settings.get("image_dir"), settings.get("kind")
    if not isinstance(image_dir, str) or not image_dir:
        return []
    detectors = [name for name, definition in _models(config).items() if definition.get("type") == "detection"]
    if kind == "images":
        reason = "measure.input.kind is images"
    elif kind == "auto" and detectors:
        reason = f"measure.input.kind auto times the detection models on photos ({', '.join(detectors)})"
    else:
        return []  # random or zeros inputs: the folder is never read
    from serveprof.measure.inputs import IMAGE_SUFFIXES

    where = "measure.input.image_dir"
    folder = Path(image_dir)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a folder"
        return [
            _problem(
                where,
                f"{image_dir} (resolved: {folder.resolve()}) {what}, and {reason}",
                "give a folder of .jpg/.png images (a relative path is relative to the workflow directory), "
                "or null for scikit-image's sample photos",
            )
        ]
    try:
        has_images = any(path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() for path in folder.iterdir())
    except OSError as error:
        return [
            _problem(
                where,
                f"{image_dir} cannot be read ({error.strerror})",
                "make the folder readable, or set image_dir to null",
            )
        ]
    if not has_images:
        return [
            _problem(
                where,
                f"{image_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}), and {reason}",
                "put some photos in it, or set measure.input.image_dir to null for scikit-image's sample photos",
            )
        ]
    return []


def _server_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    server = _settings(config, schema, "server")
    backend = server.get("backend")
    key = BACKEND_PROGRAMS.get(backend) if isinstance(backend, str) else None
    if key is None:
        return []  # embedded, or auto: without tensorflow_model_server, auto serves with the embedded server
    problems = []
    program = server.get(key)
    if isinstance(program, str) and program and shutil.which(program) is None:
        problems.append(
            _problem(
                f"server.{key}",
                f"{program!r} is neither on PATH nor an executable file, and server.backend is {backend}",
                PROGRAM_FIXES[backend],
            )
        )
    image = server.get("image")
    if backend == "apptainer" and isinstance(image, str) and image.endswith(SIF_SUFFIXES) and not os.path.isfile(image):
        problems.append(
            _problem(
                "server.image",
                f"the Apptainer image {image} (resolved: {Path(image).resolve()}) is not a file",
                f"pull it once, e.g. `apptainer pull {image} docker://tensorflow/serving:<tag>` "
                "(docs/serving.md), or set server.image to an existing .sif file",
            )
        )
    return problems


def machine_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """What this machine lacks for ``config``: the folders, files and programs it names.

    File system and PATH look-ups only (it runs while the Snakefile is parsed). A
    relative path is taken from the working directory, which is the workflow directory.
    """
    return (
        _saved_model_problems(config)
        + _image_dir_problems(config, schema)
        + _server_problems(config, schema)
        + _calibration_problems(config)
    )


def _calibration_problems(config: Mapping[str, Any]) -> list[str]:
    calibration = config.get("calibration")
    measured = calibration.get("measured") if isinstance(calibration, Mapping) else None
    if not isinstance(measured, str) or not measured or Path(measured).is_file():
        return []
    return [
        _problem(
            "calibration.measured",
            f"{measured} (resolved: {Path(measured).resolve()}) is not a file",
            "give the CSV of your on-device measurements (docs/calibration.md; relative paths are relative to the "
            "workflow directory), or set calibration.measured to null",
        )
    ]

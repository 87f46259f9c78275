"""The settings owner: the config schema, its defaults, and the typed settings each part takes.

Whatever reads a config goes through here: the Snakefile, and the commands for their
flags' defaults and their JSON arguments (``--server``, ``--input``, ``--style``). This
module loads the schema once (serveprof/schemas/config.schema.yaml), reads a
``models:`` file or sheet, explains every problem with its fix (serveprof.config_problems),
fills the schema's defaults, and builds what each part takes:

- ``ServerSettings`` for launch/ (the ``server:`` block);
- ``ProcedureSettings`` and ``InputSettings`` for measure/ (``measure:`` and ``measure.input``);
- ``Style`` for report/ (``plots:``);
- ``LoadSettings``, its ``LoadPoint`` jobs and each job's ``PointSettings`` for load/ (``load:``).
- ``DeviceSettings`` for launch/ (a ``devices:`` entry; the unconstrained ``host`` is always there).

launch/, measure/ and report/ never read a config or the schema themselves.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from serveprof.config_problems import machine_problems, text_problems, validator_class
from serveprof.errors import ServeprofError
from serveprof.launch.device import DeviceSettings
from serveprof.launch.spec import ServerSettings
from serveprof.layout import HOST
from serveprof.load.scenarios import LoadPoint, LoadSettings, PointSettings, points
from serveprof.measure.inputs import InputSettings
from serveprof.measure.procedure import ProcedureSettings
from serveprof.measure.retry import DisturbanceSettings
from serveprof.model_sheet import read_models
from serveprof.report.style import PALETTES, Style

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
CONFIG_FIX = "edit the keys named above (config/config.yaml documents every key), then run again"


@functools.cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def _node(*block: str) -> dict:
    node = schema()
    for name in block:
        node = node["properties"][name]
    return node


def defaults(*block: str) -> dict:
    """The schema's defaults of one block, e.g. ``defaults("measure")`` or ``defaults("measure", "input")``."""
    return {key: copy.deepcopy(sub["default"]) for key, sub in _node(*block)["properties"].items() if "default" in sub}


# ------------------------------------------------------------------ reading configs


def read_config_file(path: str | Path) -> dict:
    """One YAML config file; a syntax error names the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ServeprofError(f"config file {path} does not exist", "give the path of an existing YAML file") from None
    except yaml.YAMLError as error:
        raise ServeprofError(
            f"config file {path} is not valid YAML: {error}", "fix the YAML syntax at the position shown"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ServeprofError(
            f"config file {path} holds a {type(data).__name__}, not a mapping of keys",
            "write the config as `key: value` lines",
        )
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """``override`` over ``base``, as Snakemake puts a ``--configfile`` over the workflow's config.

    Mappings merge key by key; any other value replaces what was there. The default
    config names its models by file (``models: config/models.yaml``), so a config that
    names ``models:`` replaces the default set rather than adding to it.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_files(paths: Iterable[str | Path]) -> dict:
    """Config files merged in order, later ones over earlier ones (``merge``)."""
    merged: dict = {}
    for path in paths:
        merged = merge(merged, read_config_file(path))
    return merged


def with_models(config: Mapping[str, Any]) -> dict:
    """``config`` with ``models:`` as a mapping: a file or sheet it names is read (relative to the working directory)."""
    models = config.get("models")
    if isinstance(models, str):
        return {**config, "models": read_models(models)}
    return dict(config)


# ------------------------------------------------------------------ checking


def problems(config: Mapping[str, Any], machine: bool = True) -> list[str]:
    """Every problem of ``config`` (models already a mapping), one sentence each with its fix."""
    found = text_problems(config, schema())
    if machine:
        found += machine_problems(config, schema())
    return found


def check(config: Mapping[str, Any], machine: bool = True) -> None:
    """Raise one ServeprofError listing every problem, so one run shows them all."""
    found = problems(config, machine)
    if found:
        listing = "\n  - ".join(found)
        raise ServeprofError(f"the config has {len(found)} problem(s):\n  - {listing}", CONFIG_FIX)


def with_defaults(config: Mapping[str, Any]) -> dict:
    """A copy of ``config`` with every default of the schema filled in (where its blocks are mappings)."""
    import jsonschema

    base = validator_class()
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, node):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, node)

    filled = copy.deepcopy(dict(config))
    # Walking the errors is what fills the defaults; the caller has checked the config
    # (or only the block it takes), so the errors themselves are not wanted here.
    for _ in jsonschema.validators.extend(base, {"properties": set_defaults})(schema()).iter_errors(filled):
        pass
    return filled


def _block(path: tuple[str, ...], value: Mapping[str, Any] | None, what: str) -> dict:
    """One block (e.g. ``("measure", "input")``) checked alone, text only, with its defaults filled."""
    value = dict(value or {})
    nested: dict = value
    for name in reversed(path):
        nested = {name: nested}
    prefix = ".".join(path)
    found = [problem for problem in text_problems(nested, schema()) if problem.startswith(prefix)]
    if found:
        listing = "\n  - ".join(found)
        raise ServeprofError(
            f"the {what} have {len(found)} problem(s):\n  - {listing}",
            f"edit the {prefix}: block of the config (config/config.yaml documents every key)",
        )
    filled = with_defaults(nested)
    for name in path:
        filled = filled[name]
    return filled


# ------------------------------------------------------------------ typed settings


def _typed(cls, block: Mapping[str, Any]):
    return cls(**{field.name: block[field.name] for field in fields(cls)})


def _server(block: Mapping[str, Any]) -> ServerSettings:
    batching = dict(block["batching"]) if block["batching"] is not None else None
    return _typed(ServerSettings, {**block, "extra_flags": tuple(block["extra_flags"]), "batching": batching})


def _procedure(block: Mapping[str, Any]) -> ProcedureSettings:
    """The ``measure:`` keys of a series; the disturbance keys become its DisturbanceSettings."""
    nested = {"disturbance": _typed(DisturbanceSettings, block)}
    cpus = block["client_cpus"]
    nested["client_cpus"] = tuple(cpus) if cpus is not None else None
    nested["keep_gc"] = False  # not a config key: `serveprof measure --keep-gc` sets it
    plain = {field.name: block[field.name] for field in fields(ProcedureSettings) if field.name not in nested}
    return ProcedureSettings(**plain, **nested)


def _input(block: Mapping[str, Any]) -> InputSettings:
    height, width = block["image_size"]
    return _typed(InputSettings, {**block, "image_size": (height, width)})


def _point(block: Mapping[str, Any], resource_interval_s: float) -> PointSettings:
    return _typed(PointSettings, {**block, "resource_interval_s": resource_interval_s})


def _load(block: Mapping[str, Any], resource_interval_s: float) -> LoadSettings:
    return LoadSettings(
        models=tuple(block["models"]) if block["models"] is not None else None,
        concurrency=tuple(block["concurrency"]),
        request_rate=tuple(float(rate) for rate in block["request_rate"]),
        batching={
            key: tuple(tuple(value) if isinstance(value, list) else value for value in values)
            for key, values in block["batching"].items()
        },
        slo_p99_ms=block["slo_p99_ms"],
        point=_point(block, resource_interval_s),
    )


def _style(block: Mapping[str, Any]) -> Style:
    if block["palette"] not in PALETTES:
        raise ServeprofError(
            f"plots.palette {block['palette']!r} is not a known palette",
            f"set plots.palette to one of {', '.join(PALETTES)}",
        )
    return _typed(Style, {**block, "formats": tuple(block["formats"])})


def server_settings(block: Mapping[str, Any] | None = None) -> ServerSettings:
    """A ``server:`` block (``serveprof measure --server``) as ServerSettings; missing keys take the defaults."""
    return _server(_block(("server",), block, "server settings"))


def procedure_settings(block: Mapping[str, Any] | None = None) -> ProcedureSettings:
    """The measurement procedure's keys of a ``measure:`` block; missing keys take the defaults."""
    return _procedure(_block(("measure",), block, "measure settings"))


def disturbance_settings(block: Mapping[str, Any] | None = None) -> DisturbanceSettings:
    """The disturbance keys of a ``measure:`` block (``serveprof coldstart``); missing keys take the defaults."""
    return _typed(DisturbanceSettings, _block(("measure",), block, "measure settings"))


def input_settings(block: Mapping[str, Any] | None = None) -> InputSettings:
    """A ``measure.input`` block (``--input``) as InputSettings; kind ``auto`` stays until the model type is known."""
    return _input(_block(("measure", "input"), block, "input settings"))


def style(block: Mapping[str, Any] | None = None) -> Style:
    """A ``plots:`` block (``serveprof plot --style``) as a Style; missing keys take the defaults."""
    return _style(_block(("plots",), block, "plot settings"))


def point_settings(block: Mapping[str, Any] | None = None) -> PointSettings:
    """How a load point is measured (``serveprof load --load``): keys of the ``load:`` block, and
    ``resource_interval_s`` (the ``measure:`` key); missing keys take the defaults."""
    block = dict(block or {})
    interval = block.pop("resource_interval_s", defaults("measure")["resource_interval_s"])
    procedure_settings({"resource_interval_s": interval})  # checked as measure's key is
    return _point(_block(("load",), block, "load settings"), interval)


def _device(name: str, block: Mapping[str, Any] | None) -> DeviceSettings:
    """A checked ``devices:`` entry; its thread pools default to its CPU count, rounded up, as
    on-device benchmarks set threads to cores."""
    block = dict(block or {})
    device = DeviceSettings(name=name, cpus=block.get("cpus"), memory=block.get("memory"))
    threads = device.whole_cpus
    return DeviceSettings(
        name=name,
        cpus=None if device.cpus is None else float(device.cpus),
        memory=device.memory.strip() if device.memory else None,
        intra_op_threads=block.get("intra_op_threads") or threads,
        inter_op_threads=block.get("inter_op_threads") or threads,
    )


def device_settings(block: Mapping[str, Any] | None = None) -> DeviceSettings:
    """A device as JSON (``serveprof measure --device``): ``{"name": "edge", "cpus": 1, "memory": "2GiB", ...}``.

    Checked as the config's ``devices:`` entry is; no block, or ``{}``, is the unconstrained host.
    """
    block = dict(block or {})
    name = str(block.pop("name", HOST))
    found = [
        problem for problem in text_problems({"devices": {name: block}}, schema()) if problem.startswith("devices")
    ]
    if found:
        listing = "\n  - ".join(found)
        raise ServeprofError(
            f"the device settings have {len(found)} problem(s):\n  - {listing}",
            "edit the devices: block of the config (config/config.yaml documents every key)",
        )
    return _device(name, block)


def model_definition(model: str, definition: Mapping[str, Any]) -> dict:
    """One model's definition (``serveprof acquire --spec``), checked like the config's, this machine included."""
    check({"models": {model: dict(definition)}, "batch_sizes": [1]})  # batch_sizes: required at the top, unused here
    return dict(definition)


@dataclass(frozen=True)
class Settings:
    """A whole config: models read, checked, every default filled."""

    config: Mapping[str, Any]

    @property
    def models(self) -> dict[str, dict]:
        return self.config["models"]

    @property
    def strict(self) -> bool:
        return self.config["strict"]

    @property
    def allow_random_weights(self) -> bool:
        return self.config["allow_random_weights"]

    @property
    def protocol(self) -> str:
        """The wire protocol of the measurements: TF Serving's gRPC or REST API."""
        return self.config["measure"]["protocol"]

    @property
    def transport(self) -> str:
        return self.config["measure"]["transport"]

    def batch_sizes(self, model: str) -> list[int]:
        return sorted(self.models[model].get("batch_sizes", self.config["batch_sizes"]))

    def server(self) -> ServerSettings:
        return _server(self.config["server"])

    def devices(self) -> dict[str, DeviceSettings]:
        """Every device to profile on, in the config's order (default: the unconstrained host alone)."""
        return {name: _device(name, block) for name, block in self.config["devices"].items()}

    def device(self, name: str) -> DeviceSettings:
        return self.devices()[name]

    @property
    def repeats(self) -> int:
        return self.config["measure"]["repeats"]

    @property
    def max_cv_pct(self) -> float:
        return self.config["measure"]["max_cv_pct"]

    @property
    def calibration(self) -> dict:
        return self.config["calibration"]

    def variants(self, model: str) -> list[str]:
        """The model's variants (docs/variants.md): its own ``variants:``, else the global one (default [fp32])."""
        return list(self.models[model].get("variants", self.config["variants"]))

    def procedure(self) -> ProcedureSettings:
        return _procedure(self.config["measure"])

    def warmup_batch_sizes(self, model: str) -> list[int]:
        """The warm-up records written into ``model``'s export: its own list, else ``export.warmup_batch_sizes``."""
        return sorted(self.models[model].get("warmup_batch_sizes", self.config["export"]["warmup_batch_sizes"]))

    def input_for(self, model: str) -> InputSettings:
        """The inputs ``model`` is timed with: kind ``auto`` resolved by its type, its own input size applied."""
        definition = self.models[model]
        block = dict(self.config["measure"]["input"])
        if "input_size" in definition:
            block["image_size"] = definition["input_size"]
        return _input(block).resolved(definition["type"])

    def style(self) -> Style:
        return _style(self.config["plots"])

    def load(self) -> LoadSettings:
        return _load(self.config["load"], self.config["measure"]["resource_interval_s"])

    def load_models(self) -> list[str]:
        """The models the load scenarios apply to (none while the block names no point)."""
        load = self.load()
        if not load.enabled:
            return []
        return [model for model in self.models if load.models is None or model in load.models]

    def load_points(self, model: str) -> list[LoadPoint]:
        """Every (scenario, point) job of ``model``."""
        if model not in self.load_models():
            return []
        return points(self.load(), self.config["server"]["batching"])

    def load_point(self, model: str, scenario: str, point: str) -> LoadPoint:
        for candidate in self.load_points(model):
            if (candidate.scenario, candidate.point) == (scenario, point):
                return candidate
        raise ServeprofError(
            f"{model}/{scenario}/{point} is not a load point of this config",
            "ask for a point the load: block names (workload/load/<model>/<scenario>/<point>.csv)",
        )

    def model_hash(self, model: str, device: str = HOST) -> str:
        """Fingerprint of everything that shapes one model's numbers on one device (provenance)."""
        shaping = {
            "model": self.models[model],
            "batch_sizes": self.batch_sizes(model),
            "measure": self.config["measure"],
            "server": self.config["server"],
            "warmup_batch_sizes": self.warmup_batch_sizes(model),
        }
        if device != HOST:
            shaping["device"] = self.device(device).to_json()
        return fingerprint(shaping)


def load(config: Mapping[str, Any]) -> Settings:
    """Settings from a merged config, as Snakemake hands it to the Snakefile."""
    resolved = with_models(config)
    check(resolved)
    loaded = Settings(with_defaults(resolved))
    _check_variants(loaded)
    return loaded


def _check_variants(loaded: Settings) -> None:
    """Refuse, before any job, a variant this run cannot serve (tftrt without a GPU, say)."""
    from serveprof.variants.catalog import serving_problem

    gpu = loaded.server().gpu
    found = {}
    for model in loaded.models:
        for name in loaded.variants(model):
            problem = serving_problem(name, gpu)
            if problem:
                found.setdefault(problem, []).append(model)
    if found:
        (problem, fix), models = next(iter(found.items()))
        raise ServeprofError(f"{problem} (models: {', '.join(models)})", fix)


def load_files(paths: Iterable[str | Path]) -> Settings:
    """Settings from config files, merged in order as the workflow merges them."""
    return load(read_config_files(paths))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def fingerprint(value: Any) -> str:
    """A short, stable fingerprint of a (part of a) config, for provenance."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]

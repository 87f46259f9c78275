"""The settings owner: the config schema, its defaults, and the typed settings each part takes.

Whatever reads a config goes through here: the Snakefile, and the commands for their
flags' defaults and their JSON arguments (``--server``, ``--input``, ``--style``). This
module loads the schema once (serveprof/schemas/config.schema.yaml), reads a
``models:`` file or sheet, explains every problem with its fix (serveprof.config_problems),
fills the schema's defaults, and builds what each part takes:

- ``ServerSettings`` for launch/ (the ``server:`` block);
- ``ProcedureSettings`` and ``InputSettings`` for measure/ (``measure:`` and ``measure.input``);
- ``Style`` for report/ (``plots:``).

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
from serveprof.launch.spec import ServerSettings
from serveprof.measure.inputs import InputSettings
from serveprof.measure.procedure import ProcedureSettings
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
    return _typed(ServerSettings, {**block, "extra_flags": tuple(block["extra_flags"])})


def _input(block: Mapping[str, Any]) -> InputSettings:
    height, width = block["image_size"]
    return _typed(InputSettings, {**block, "image_size": (height, width)})


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
    return _typed(ProcedureSettings, _block(("measure",), block, "measure settings"))


def input_settings(block: Mapping[str, Any] | None = None) -> InputSettings:
    """A ``measure.input`` block (``--input``) as InputSettings; kind ``auto`` stays until the model type is known."""
    return _input(_block(("measure", "input"), block, "input settings"))


def style(block: Mapping[str, Any] | None = None) -> Style:
    """A ``plots:`` block (``serveprof plot --style``) as a Style; missing keys take the defaults."""
    return _style(_block(("plots",), block, "plot settings"))


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

    def variants(self, model: str) -> list[str]:
        """The model's variants (docs/variants.md): its own ``variants:``, else the global one (default [fp32])."""
        return list(self.models[model].get("variants", self.config["variants"]))

    def procedure(self) -> ProcedureSettings:
        return _typed(ProcedureSettings, self.config["measure"])

    def input_for(self, model: str) -> InputSettings:
        """The inputs ``model`` is timed with: kind ``auto`` resolved by its type, its own input size applied."""
        definition = self.models[model]
        block = dict(self.config["measure"]["input"])
        if "input_size" in definition:
            block["image_size"] = definition["input_size"]
        return _input(block).resolved(definition["type"])

    def style(self) -> Style:
        return _style(self.config["plots"])

    def model_hash(self, model: str) -> str:
        """Fingerprint of everything that shapes one model's numbers (provenance)."""
        return fingerprint(
            {
                "model": self.models[model],
                "batch_sizes": self.batch_sizes(model),
                "measure": self.config["measure"],
                "server": self.config["server"],
            }
        )


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

"""The workflow's configuration: schema validation with errors that name the key and the fix.

One schema (``serveprof/schemas/config.schema.yaml``) serves both Snakemake's
``validate`` and these explanations: each schema node carries an ``x-fix`` string, the
advice shown when a value there is invalid.
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from serveprof.errors import ServeprofError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load_config_file(path: str | Path) -> dict:
    """Read one YAML config file; a syntax error names the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ServeprofError(f"config file {path} does not exist", "give the path of an existing YAML file") from None
    except yaml.YAMLError as error:
        raise ServeprofError(f"config file {path} is not valid YAML: {error}", "fix the YAML syntax at the position shown") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ServeprofError(f"config file {path} holds a {type(data).__name__}, not a mapping of keys", "write the config as `key: value` lines")
    return data


def merge_configs(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """Deep-merge ``overrides`` into ``base``, except that ``models`` is replaced whole.

    A lab that profiles its own models must not get the default eight as well, so a
    config that names ``models:`` replaces the default model set instead of adding to it.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if key != "models" and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _key_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _fix_for(error) -> str:
    """The ``x-fix`` advice of the failing schema node, or of the nearest node above it."""
    schema = load_schema()
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
            return "see the comments in config.yaml"
        node_path.pop()


def _describe(error) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known)) if isinstance(error.instance, dict) else []
        return f"{where}: unknown key(s) {', '.join(map(repr, extra))}; known keys are {', '.join(known)}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "pattern" and error.absolute_path and str(error.absolute_path[-1]) == "url":
        return f"{where}: {error.instance!r} is not a valid http(s) URL"
    if "propertyNames" in error.absolute_schema_path:
        return f"{where}: model key {error.instance!r} cannot be used as a directory name"
    return f"{where}: {error.message}"


def explain_problems(config: Mapping[str, Any]) -> list[str]:
    """Every problem in ``config``, one sentence each with its fix; empty when valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        # `if/then` failures repeat a `required` error found under them; keep the specific one.
        if error.validator in ("if", "allOf") and error.context:
            continue
        problems.append(f"{_describe(error)}\n    fix: {_fix_for(error)}")
    return problems


def check_config(config: Mapping[str, Any]) -> None:
    """Raise one ServeprofError listing every problem, so one run shows them all."""
    problems = explain_problems(config)
    if problems:
        listing = "\n  - ".join(problems)
        raise ServeprofError(
            f"the config has {len(problems)} problem(s):\n  - {listing}",
            "edit the keys named above (config.yaml documents every key), then run again",
        )


def with_defaults(config: Mapping[str, Any]) -> dict:
    """A copy of ``config`` with the schema's defaults filled in (as Snakemake's validate does)."""
    import jsonschema

    def fill_defaults(validator_class):
        validate_properties = validator_class.VALIDATORS["properties"]

        def set_defaults(validator, properties, instance, schema):
            if isinstance(instance, dict):
                for name, subschema in properties.items():
                    if "default" in subschema and name not in instance:
                        instance[name] = copy.deepcopy(subschema["default"])
            yield from validate_properties(validator, properties, instance, schema)

        return jsonschema.validators.extend(validator_class, {"properties": set_defaults})

    filled = copy.deepcopy(dict(config))
    check_config(filled)
    fill_defaults(jsonschema.Draft202012Validator)(load_schema()).validate(filled)
    return filled


def model_batch_sizes(config: Mapping[str, Any], model: str) -> list[int]:
    return sorted(config["models"][model].get("batch_sizes", config["batch_sizes"]))


def measurement_input(config: Mapping[str, Any], model: str) -> dict:
    """The ``--input`` settings for one model: ``auto`` resolved, the model's input size applied."""
    settings = dict(config["measure"]["input"])
    definition = config["models"][model]
    if settings["kind"] == "auto":
        # Detection post-processing (NMS) depends on image content, so real photos by default.
        settings["kind"] = "images" if definition["type"] == "detection" else "random"
    if "input_size" in definition:
        settings["image_size"] = list(definition["input_size"])
    return settings


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_hash(value: Any) -> str:
    """A short, stable fingerprint of a (part of a) config, for provenance."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def model_config_hash(config: Mapping[str, Any], model: str) -> str:
    """Fingerprint of everything that shapes one model's numbers."""
    return config_hash(
        {
            "model": config["models"][model],
            "batch_sizes": model_batch_sizes(config, model),
            "measure": config["measure"],
            "server": config["server"],
        }
    )

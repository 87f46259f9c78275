import json
import os
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from serveprof.settings import canonical_json, load

# The whole config, checked (every problem named with its fix, before any job runs),
# its models read from the file or sheet it names, every default filled.
SETTINGS = load(config)
MODELS = SETTINGS.models
# What Snakemake shows of the config (the report's captions) is the complete one too,
# as snakemake.utils.validate would leave it with the schema's defaults.
config.update(SETTINGS.config)


wildcard_constraints:
    model="|".join(re.escape(name) for name in MODELS),
    batch=r"[1-9][0-9]*",
    figure="latency|throughput|coldstart|resources",


# Functions below only look things up: the settings, and the status files the
# acquisition checkpoint writes. They decide nothing behind Snakemake's back.

# ---------------------------------------------------------------- model settings
#
# The model keys each step reads, by source. A rule is given only these, so a change to
# any other key reruns nothing there: a per-model `batch_sizes` adds or drops
# measurements, and a zoo or saved_model `input_size` changes what is fed to the model,
# which only the measurement rules receive (`input_settings`).
ACQUISITION_KEYS = {
    "keras": ("source", "type", "application", "weights", "input_size"),
    "tf2_zoo": ("source", "type", "url", "sha256"),
    "saved_model": ("source", "type", "path"),
}
EXPORT_KEYS = {
    "keras": ("source", "type", "application", "input_size"),
    "tf2_zoo": ("source", "type", "url"),
    "saved_model": ("source", "type", "path", "signature"),
}


def model_keys(model, keys):
    definition = MODELS[model]
    taken = [key for key in keys[definition["source"]] if key in definition]
    return canonical_json({key: definition[key] for key in taken})


def acquisition_spec(wildcards):
    return model_keys(wildcards.model, ACQUISITION_KEYS)


def export_spec(wildcards):
    return model_keys(wildcards.model, EXPORT_KEYS)


# ---------------------------------------------------------------- acquisition
#
# A model is acquired when its status file is missing or its source keys change, and
# at no other time. One that could not be obtained stays "not profiled" until the user
# deletes its status (its fix says so): then Snakemake makes the file again, like any
# deleted result. Retrying on every run instead would make every run's outcome depend
# on the network, and no dry run could say what a run does after it.


def status_path(model):
    return f"data/model/acquired/{model}.json"


def acquisition(model):
    """What the last acquisition of ``model`` found, or None before its first."""
    try:
        return json.loads(Path(status_path(model)).read_text())
    except (OSError, ValueError):
        return None


def profiled(model):
    """Whether this run makes ``model``'s results: once obtained, or before its first acquisition.

    acquire_model is a checkpoint: once it has run, Snakemake asks again (every job that
    reads a status takes it as input), and a model that was not obtained drops its jobs.
    """
    status = acquisition(model)
    return status is None or status.get("status") == "ok"


def profiled_models():
    return [model for model in MODELS if profiled(model)]


def statuses(wildcards=None):
    return [status_path(model) for model in MODELS]


def weights_policy(wildcards):
    """allow_random_weights, for the models it can change: Keras models that ask for ImageNet weights."""
    definition = MODELS[wildcards.model]
    if (
        definition["source"] != "keras"
        or definition.get("weights", "imagenet") != "imagenet"
    ):
        return ""
    return (
        "--allow-random-weights"
        if SETTINGS.allow_random_weights
        else "--no-allow-random-weights"
    )


def strict_flag(wildcards=None):
    """`strict` is the run's verdict on models not obtained, so the manifest applies it."""
    return "--strict" if SETTINGS.strict else ""


# ---------------------------------------------------------------- measurement


def server_settings(wildcards=None):
    return canonical_json(SETTINGS.config["server"])


def input_settings(wildcards):
    return canonical_json(asdict(SETTINGS.input_for(wildcards.model)))


def client_settings(wildcards=None):
    return f"--protocol {SETTINGS.protocol} --transport {SETTINGS.transport}"


def procedure_settings(wildcards):
    """Only the measure keys that change a measurement: a new plot style must not rerun it."""
    procedure = SETTINGS.procedure()
    return (
        f"{client_settings()} --requests {procedure.requests}"
        f" --max-seconds {procedure.max_seconds} --min-requests {procedure.min_requests}"
        f" --warmup-requests {procedure.warmup_requests}"
        f" --warmup-max-seconds {procedure.warmup_max_seconds}"
        f" --resource-interval {procedure.resource_interval_s}"
    )


def model_hash(wildcards):
    return SETTINGS.model_hash(wildcards.model)


def inference_dir(model):
    return f"data/model/inference/{model}"


def saved_model(wildcards):
    return f"{inference_dir(wildcards.model)}/1"


def per_batch(pattern):
    """An input function: ``pattern`` for each batch size of the job's model."""
    return lambda wildcards: expand(
        pattern, model=wildcards.model, batch=SETTINGS.batch_sizes(wildcards.model)
    )


def model_results(model):
    """What a profiled model leaves in workload/profiling/<model>/."""
    folder = f"workload/profiling/{model}"
    batches = SETTINGS.batch_sizes(model)
    return [
        f"{folder}/{model}.csv",
        f"{folder}/summary.csv",
        f"{folder}/coldstart.csv",
        f"{folder}/provenance.json",
        *expand(f"{folder}/{model}-b{{batch}}.csv", batch=batches),
        *expand(f"{folder}/stats/b{{batch}}.json", batch=batches),
    ]


def profiled_results(wildcards=None):
    return [path for model in profiled_models() for path in model_results(model)]


# ---------------------------------------------------------------- report

# What `serveprof tables` writes, whatever was profiled (serveprof/report/tables.py).
TABLES = [
    "coldstart",
    "durations",
    "compact",
    "percentiles",
    "resources",
    "not_profiled",
]
TABLE_FILES = [
    f"reports/tables/{name}.{ext}" for name in TABLES for ext in ("csv", "md")
]
TABLE_FILES.append("reports/tables/models.csv")
FIGURES = ["latency", "throughput", "coldstart", "resources"]


def plot_style(wildcards=None):
    return canonical_json(SETTINGS.config["plots"])


def other_formats(stem):
    """A figure's files besides the PNG, which the HTML report embeds and so is always drawn."""
    return [f"{stem}.{ext}" for ext in SETTINGS.style().formats if ext != "png"]


def figure_files(models):
    if not models:
        return []
    formats = sorted(set(SETTINGS.style().formats) | {"png"})
    overview = expand("reports/figures/{figure}.{ext}", figure=FIGURES, ext=formats)
    per_model = expand(
        "reports/figures/{model}/distribution.{ext}", model=models, ext=formats
    )
    return overview + per_model


# ---------------------------------------------------------------- what a run makes

MANIFEST = "workload/profiling/all"


def final_files(wildcards=None):
    """Every file a run makes, the manifest aside: statuses, results, report, figures.

    `rule all` and the manifest take them all as input, so whichever target is asked
    for, a deleted one is made again.
    """
    models = profiled_models()
    return (
        statuses()
        + profiled_results()
        + ["reports/report.md", *TABLE_FILES]
        + figure_files(models)
        + variant_files()  # rules/variants_common.smk; none with the default variants: [fp32]
        + layer_files()  # none with the default profile.batch_sizes: []
    )


def manifest_run():
    """The run the manifest belongs to: the one that wrote it, while every file it stands for exists.

    It is the manifest's one param. Snakemake checks a target such as
    workload/profiling/all only for itself, so it would not notice a result deleted
    from under it; a run that starts with one missing gets a token of its own
    instead, the changed param makes Snakemake write the manifest again, and on the
    way it makes whatever the manifest takes as input and is missing. The manifest
    records the token, so the next run, finding everything there, has nothing to do.
    """
    try:
        recorded = json.loads(Path(MANIFEST).read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded and all(os.path.exists(path) for path in final_files()):
        return recorded
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")

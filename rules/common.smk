import json
import os
import re
from pathlib import Path

from snakemake.utils import validate

from serveprof.config import (
    SCHEMA_PATH,
    canonical_json,
    check_config,
    measurement_input,
    merge_configs,
    model_batch_sizes,
    model_config_hash,
)

# A config given with --configfile/--config that names `models:` replaces the default
# model set; Snakemake alone would deep-merge it into the default eight.
config.update(merge_configs(config, workflow.config_settings.overwrite_config or {}))

# Our check first: it names every bad key and its fix. Snakemake's validate then fills
# the schema's defaults (same schema), so every rule below sees a complete config.
check_config(config)
validate(config, schema=str(SCHEMA_PATH))

MODELS = config["models"]


wildcard_constraints:
    model="|".join(re.escape(name) for name in MODELS),
    batch=r"[1-9][0-9]*",
    figure="latency|throughput|coldstart|resources",


def rebuilt_when_missing(paths):
    """Pass ``paths`` through, forcing the jobs that make the missing ones to run again.

    Snakemake rebuilds a deleted file only when something downstream needs to run, so a
    deleted `<model>-b<N>.csv` would stay missing while the files derived from it are
    present. Forcing its job reruns exactly that job and, through the DAG, everything
    derived from it. The DAG is read here, while input functions are evaluated and
    before Snakemake decides which jobs run; nothing else exposes that step.
    """
    dag = workflow.dag
    if dag is not None:
        dag.forcefiles.update(path for path in paths if not os.path.exists(path))
    return paths


def model_spec(wildcards):
    return canonical_json(MODELS[wildcards.model])


def acquisition_flags(wildcards):
    flags = ["--strict"] if config["strict"] else []
    flags.append(
        "--allow-random-weights"
        if config["allow_random_weights"]
        else "--no-allow-random-weights"
    )
    return " ".join(flags)


def staged_since_unavailable(wildcards):
    """A rerun trigger for a model that could not be obtained earlier.

    Its status file exists, so Snakemake would not try again; once the user stages the
    tarball this value changes, and the params trigger reruns the acquisition. For an
    obtained model it stays empty, so a finished run stays finished.
    """
    status_path = Path(f"data/model/acquired/{wildcards.model}.json")
    if not status_path.exists():
        return ""
    status = json.loads(status_path.read_text())
    if status.get("status") != "unavailable":
        return ""
    url = MODELS[wildcards.model].get("url", "")
    staged = Path("data/model/download") / url.rsplit("/", 1)[-1]
    return str(staged) if url and staged.exists() else ""


def is_obtained(model):
    """Reads the acquisition checkpoint, so the DAG holds jobs only for obtained models."""
    status_file = checkpoints.acquire_model.get(model=model).output[0]
    return json.loads(Path(status_file).read_text())["status"] == "ok"


def obtained_models():
    return [model for model in MODELS if is_obtained(model)]


def batch_sizes(wildcards):
    return model_batch_sizes(config, wildcards.model)


def server_settings(wildcards=None):
    return canonical_json(config["server"])


def input_settings(wildcards):
    return canonical_json(measurement_input(config, wildcards.model))


def measure_settings(wildcards):
    """Only the measure keys that change a measurement: a new plot style must not rerun it."""
    measure = config["measure"]
    return (
        f"--protocol {measure['protocol']} --requests {measure['requests']}"
        f" --max-seconds {measure['max_seconds']} --min-requests {measure['min_requests']}"
        f" --warmup-requests {measure['warmup_requests']}"
        f" --warmup-max-seconds {measure['warmup_max_seconds']}"
        f" --resource-interval {measure['resource_interval_s']}"
    )


def model_hash(wildcards):
    return model_config_hash(config, wildcards.model)


def inference_dir(model):
    return f"data/model/inference/{model}"


def per_batch_stats(wildcards):
    return rebuilt_when_missing(
        expand(
            "workload/profiling/{model}/stats/b{batch}.json",
            model=wildcards.model,
            batch=batch_sizes(wildcards),
        )
    )


def per_batch_latencies(wildcards):
    return rebuilt_when_missing(
        expand(
            "workload/profiling/{model}/{model}-b{batch}.csv",
            model=wildcards.model,
            batch=batch_sizes(wildcards),
        )
    )


def model_results(model):
    return [
        f"workload/profiling/{model}/{model}.csv",
        f"workload/profiling/{model}/summary.csv",
        f"workload/profiling/{model}/coldstart.csv",
        f"workload/profiling/{model}/provenance.json",
    ]


def profiled_results(wildcards=None):
    return rebuilt_when_missing(
        [path for model in obtained_models() for path in model_results(model)]
    )


def acquisition_statuses(wildcards=None):
    return rebuilt_when_missing(
        expand("data/model/acquired/{model}.json", model=MODELS)
    )


def saved_model(wildcards):
    return rebuilt_when_missing([f"{inference_dir(wildcards.model)}/1"])


def coldstart_result(wildcards):
    return rebuilt_when_missing([f"workload/profiling/{wildcards.model}/coldstart.csv"])


def plot_style(wildcards=None):
    return canonical_json(config["plots"])


def other_formats(stem):
    """A figure's files besides the PNG, which the HTML report embeds and so is always drawn."""
    return [f"{stem}.{ext}" for ext in config["plots"]["formats"] if ext != "png"]


def figure_files(wildcards=None):
    formats = sorted(set(config["plots"]["formats"]) | {"png"})
    profiled = obtained_models()
    if not profiled:
        return []
    overview = expand(
        "reports/figures/{figure}.{ext}",
        figure=["latency", "throughput", "coldstart", "resources"],
        ext=formats,
    )
    per_model = expand(
        "reports/figures/{model}/distribution.{ext}",
        model=profiled,
        ext=formats,
    )
    return overview + per_model


def profiled_outputs(wildcards):
    return profiled_results() + rebuilt_when_missing(
        ["reports/report.md"] + figure_files()
    )

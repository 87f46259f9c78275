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
from serveprof.errors import ServeprofError

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


# ---------------------------------------------------------------- rebuilding results
#
# Snakemake remakes a deleted intermediate file only when a job that reads it has to
# run anyway. Results are rebuilt when deleted: deleting one `<model>-b<N>.csv` reruns
# exactly that measurement and what is derived from it. Nothing else is forced, so a
# SavedModel deleted to free disk stays deleted until a measurement of its model has to
# run again (which then re-exports it and measures every batch size of that model anew).


def force(paths):
    """Run the jobs that write ``paths`` in this run, as ``--forcerun <paths>`` would.

    Input functions run while Snakemake builds the DAG, before it decides which jobs
    run; its DAG's ``forcefiles`` is what ``--forcerun`` fills. Snakemake has no public
    way to do this from inside a workflow, so the Snakemake version is pinned
    (pyproject.toml) and tests/test_workflow.py checks the behaviour. Only when jobs
    are scheduled (a run or a dry run, which have an executor): `--report` and the
    other read-only commands show the results as they are.
    """
    dag = workflow.dag
    if dag is None or workflow.executor_plugin is None or not paths:
        return
    if not isinstance(getattr(dag, "forcefiles", None), set):
        raise ServeprofError(
            "this Snakemake version has no DAG.forcefiles, which the workflow uses to rebuild deleted results",
            "install the Snakemake version pinned in pyproject.toml (pip install -e .)",
        )
    dag.forcefiles.update(paths)


def rebuilt_when_missing(paths):
    """Pass ``paths`` through, forcing the jobs that make the missing ones to run."""
    force([path for path in paths if not os.path.exists(path)])
    return paths


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


def status_path(model):
    return f"data/model/acquired/{model}.json"


def falls_back_to_random(model, status):
    """Built with random weights because the ImageNet ones could not be fetched."""
    wanted = MODELS[model].get("weights", "imagenet")
    return status.get("weights") == "random" and wanted != "random"


def acquisition_due(model):
    """Whether ``model`` is acquired (again) in this run.

    A status file is rewritten only when its content can change; acquiring writes the
    same bytes for the same outcome, and Snakemake, which compares checksums of small
    inputs, then reruns nothing downstream. So a finished run stays finished. Due are:

    - a model without a (readable) status;
    - a model that could not be obtained: tried again on every run (the network may be
      back, a tarball staged, a partial download ready to resume; a failed try costs
      seconds);
    - a Keras model built with random weights because its ImageNet weights could not be
      fetched, once the weights file is in the Keras cache, or once random weights are
      no longer allowed.
    """
    try:
        status = json.loads(Path(status_path(model)).read_text())
    except (OSError, ValueError):
        return True
    if status.get("status") != "ok":
        return True
    if falls_back_to_random(model, status):
        missing = status.get("missing_file")
        return not config["allow_random_weights"] or bool(
            missing and os.path.exists(missing)
        )
    return False


def acquisition_flags(wildcards, output):
    """`strict` and `allow_random_weights` for `serveprof acquire`, not a rerun trigger.

    Snakemake records no param whose function takes `output`, so changing either
    setting reruns no acquisition by itself: `acquisition_due` picks exactly the ones
    whose outcome the change can alter (a model not obtained, or one that fell back to
    random weights).
    """
    flags = ["--strict"] if config["strict"] else []
    if config["allow_random_weights"]:
        flags.append("--allow-random-weights")
    else:
        flags.append("--no-allow-random-weights")
    return " ".join(flags)


def acquisition_statuses(wildcards=None):
    paths = [status_path(model) for model in MODELS]
    force([status_path(model) for model in MODELS if acquisition_due(model)])
    return paths


def is_obtained(model):
    """Reads the acquisition checkpoint, so the DAG holds jobs only for obtained models."""
    status_file = checkpoints.acquire_model.get(model=model).output[0]
    return json.loads(Path(status_file).read_text())["status"] == "ok"


def obtained_models():
    return [model for model in MODELS if is_obtained(model)]


# ---------------------------------------------------------------- measurement


def batch_sizes(wildcards):
    return model_batch_sizes(config, wildcards.model)


def server_settings(wildcards=None):
    return canonical_json(config["server"])


def input_settings(wildcards):
    return canonical_json(measurement_input(config, wildcards.model))


def client_settings(wildcards=None):
    measure = config["measure"]
    return f"--protocol {measure['protocol']} --transport {measure['transport']}"


def measure_settings(wildcards):
    """Only the measure keys that change a measurement: a new plot style must not rerun it."""
    measure = config["measure"]
    return (
        f"{client_settings()} --requests {measure['requests']}"
        f" --max-seconds {measure['max_seconds']} --min-requests {measure['min_requests']}"
        f" --warmup-requests {measure['warmup_requests']}"
        f" --warmup-max-seconds {measure['warmup_max_seconds']}"
        f" --resource-interval {measure['resource_interval_s']}"
    )


def model_hash(wildcards):
    return model_config_hash(config, wildcards.model)


def inference_dir(model):
    return f"data/model/inference/{model}"


def saved_model(wildcards):
    return f"{inference_dir(wildcards.model)}/1"


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


def coldstart_result(wildcards):
    return rebuilt_when_missing([f"workload/profiling/{wildcards.model}/coldstart.csv"])


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


# ---------------------------------------------------------------- report

# What `serveprof tables` writes into reports/tables/ (serveprof/report/tables.py and
# tables_cli.py): the result tables only when at least one model was profiled.
RESULT_TABLES = ["coldstart", "durations", "compact", "percentiles", "resources"]


def table_files(profiled):
    names = (RESULT_TABLES if profiled else []) + ["not_profiled"]
    tables = [f"reports/tables/{name}.{ext}" for name in names for ext in ("csv", "md")]
    return tables + ["reports/tables/models.csv"]


def plot_style(wildcards=None):
    return canonical_json(config["plots"])


def other_formats(stem):
    """A figure's files besides the PNG, which the HTML report embeds and so is always drawn."""
    return [f"{stem}.{ext}" for ext in config["plots"]["formats"] if ext != "png"]


def figure_files(profiled):
    if not profiled:
        return []
    formats = sorted(set(config["plots"]["formats"]) | {"png"})
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
    """Every result, table and figure; a deleted one is made again."""
    profiled = obtained_models()
    if not all(os.path.exists(path) for path in table_files(profiled)):
        force(["reports/report.md"])  # the tables job writes them all
    return profiled_results() + rebuilt_when_missing(
        ["reports/report.md"] + figure_files(profiled)
    )

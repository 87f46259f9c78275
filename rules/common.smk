import json
import os
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from serveprof import layout
from serveprof.settings import canonical_json, load

# The whole config, checked (every problem named with its fix, before any job runs),
# its models read from the file or sheet it names, every default filled.
SETTINGS = load(config)
MODELS = SETTINGS.models
# What Snakemake shows of the config (the report's captions) is the complete one too,
# as snakemake.utils.validate would leave it with the schema's defaults.
config.update(SETTINGS.config)
# The devices to profile on (default: the unconstrained host alone, today's layout).
DEVICES = SETTINGS.devices()


wildcard_constraints:
    model="|".join(re.escape(name) for name in MODELS),
    # A folder segment, empty at the default (serveprof/layout.py): "" for the host,
    # "devices/<name>/" for another device; "" for one series, "repeats/r<R>/" for a repeat.
    device=layout.device_constraint(DEVICES),
    repeat=layout.repeat_constraint(SETTINGS.repeats),
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


def warmup_flags(wildcards):
    """Warm-up records written into the export (export.warmup_batch_sizes, or the model's own)."""
    sizes = SETTINGS.warmup_batch_sizes(wildcards.model)
    if not sizes:
        return ""
    flags = f"--warmup-batch-sizes {','.join(map(str, sizes))}"
    # A zoo detector's image input (TF2 Detection Zoo: `input_tensor`, uint8 [1, None, None, 3]) has a
    # free height and width: the records take the size it is timed at.
    if MODELS[wildcards.model]["source"] == "tf2_zoo":
        height, width = SETTINGS.input_for(wildcards.model).image_size
        flags += f" --warmup-input-shape input_tensor={height},{width},3"
    return flags


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


def disturbance_settings(wildcards=None):
    """When a serving job's timed part counts as disturbed, and how often it is measured again."""
    watch = SETTINGS.procedure().disturbance
    none = lambda value: "none" if value is None else value
    return (
        f"--max-foreign-cpu-pct {none(watch.max_foreign_cpu_pct)}"
        f" --max-steal-pct {none(watch.max_steal_pct)}"
        f" --max-memory-some-pct {none(watch.max_memory_some_pct)}"
        f" --disturbance-interval {watch.disturbance_interval_s}"
        f" --retry-disturbed {watch.retry_disturbed} --retry-pause {watch.retry_pause_s}"
    )


def procedure_settings(wildcards):
    """Only the measure keys that change a measurement: a new plot style must not rerun it."""
    procedure = SETTINGS.procedure()
    cpus = procedure.client_cpus
    return (
        f"{client_settings()} --requests {procedure.requests}"
        f" --max-seconds {procedure.max_seconds} --min-requests {procedure.min_requests}"
        f" --warmup-requests {procedure.warmup_requests}"
        f" --warmup-max-seconds {procedure.warmup_max_seconds}"
        f" --resource-interval {procedure.resource_interval_s}"
        f" {disturbance_settings()}"
        f" --client-cpus {','.join(map(str, cpus)) if cpus else 'none'}"
        # Only when on: the params of results measured before this key existed stay the same.
        + (" --keep-awake" if procedure.keep_awake else "")
    )


def model_hash(wildcards):
    # Variant jobs run on the host only, and have no device wildcard.
    return SETTINGS.model_hash(
        wildcards.model, layout.device_of(wildcards.get("device", ""))
    )


# ---------------------------------------------------------------- devices and repeats


def device_of(wildcards):
    return DEVICES[layout.device_of(wildcards.device)]


def device_settings(wildcards):
    """The job's device as --device JSON; the host's is {} (no limits)."""
    device = device_of(wildcards)
    return canonical_json(device.to_json() if device.constrained else {})


# A serving job on a device reserves the device's CPUs (a quota rounded up) and its
# memory, plus a core and 1 GB for the client that times it, so a scheduler (SLURM's
# cpus_per_task and mem_mb) gives the job what the device has. The host keeps today's.
HOST_THREADS = 4
HOST_MEM_MB = 16000
CLIENT_MEM_MB = 1000


def device_threads(wildcards):
    device = device_of(wildcards)
    return HOST_THREADS if device.cpus is None else device.whole_cpus + 1


def device_mem_mb(wildcards):
    device = device_of(wildcards)
    if device.memory is None:
        return HOST_MEM_MB
    return -(-device.memory_bytes // 1_000_000) + CLIENT_MEM_MB


def repeat_flag(wildcards):
    repeat = layout.repeat_of(wildcards.repeat)
    return "" if repeat is None else f"--repeat {repeat}"


def repeats(pattern):
    """An input function: ``pattern`` for each repeat of the job's cell."""
    return lambda wildcards: expand(
        pattern,
        repeat=[layout.repeat_segment(r) for r in range(1, SETTINGS.repeats + 1)],
        allow_missing=True,
    )


def results_dir(wildcards):
    return layout.results_dir(layout.device_of(wildcards.device))


def calibration_flags(wildcards=None):
    """`serveprof calibrate`'s results folders and profiles, from the devices and `calibration:`."""
    calibration = SETTINGS.calibration
    host = layout.HOST if layout.HOST in DEVICES else next(iter(DEVICES))
    flags = [
        f"--results {layout.results_dir(host)}",
        f"--statistic {calibration['statistic']} --level {calibration['level']}",
    ]
    others = [name for name in DEVICES if name != layout.HOST]
    if others:
        pairs = " ".join(f"{name}={layout.results_dir(name)}" for name in others)
        flags.append(f"--device-results {pairs}")
    if calibration["profiles"]:
        pairs = " ".join(
            f"{measured}={device}"
            for measured, device in calibration["profiles"].items()
        )
        flags.append(f"--profile {pairs}")
    return " ".join(flags)


def calibration_files():
    if not SETTINGS.calibration["measured"]:
        return []
    return ["reports/calibration/calibration.md"]


def inference_dir(model):
    return f"data/model/inference/{model}"


def saved_model(wildcards):
    return f"{inference_dir(wildcards.model)}/1"


def per_batch(pattern):
    """An input function: ``pattern`` for each batch size of the job's model (on the job's device)."""
    return lambda wildcards: expand(
        pattern,
        model=wildcards.model,
        batch=SETTINGS.batch_sizes(wildcards.model),
        device=getattr(wildcards, "device", ""),
    )


def model_results(model, device=layout.HOST):
    """What a profiled model leaves in its folder: workload/profiling/<model>/ on the host."""
    folder = layout.model_dir(model, device)
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
    """Every device's results, or the job's device's only (the report of one device)."""
    devices = (
        [layout.device_of(wildcards.device)]
        if wildcards is not None and hasattr(wildcards, "device")
        else list(DEVICES)
    )
    return [
        path
        for device in devices
        for model in profiled_models()
        for path in model_results(model, device)
    ]


def results_dirs(wildcards=None):
    return [layout.results_dir(device) for device in DEVICES]


# ---------------------------------------------------------------- report

# What `serveprof tables` writes, whatever was profiled (serveprof/report/tables.py).
TABLES = [
    "coldstart",
    "durations",
    "compact",
    "percentiles",
    "server_latency",
    "resources",
    "not_profiled",
]
# Each device's report is in its own folder: reports/ for the host, reports/devices/<name>/.
TABLE_FILES = [
    f"reports/{{device}}tables/{name}.{ext}" for name in TABLES for ext in ("csv", "md")
]
TABLE_FILES.append("reports/{device}tables/models.csv")
FIGURES = ["latency", "throughput", "coldstart", "resources"]


def plot_style(wildcards=None):
    return canonical_json(SETTINGS.config["plots"])


def other_formats(stem):
    """A figure's files besides the PNG, which the HTML report embeds and so is always drawn."""
    return [f"{stem}.{ext}" for ext in SETTINGS.style().formats if ext != "png"]


def figure_files(models, device=layout.HOST):
    if not models:
        return []
    folder = f"reports/{layout.device_segment(device)}figures"
    formats = sorted(set(SETTINGS.style().formats) | {"png"})
    overview = expand(f"{folder}/{{figure}}.{{ext}}", figure=FIGURES, ext=formats)
    per_model = expand(
        f"{folder}/{{model}}/distribution.{{ext}}", model=models, ext=formats
    )
    return overview + per_model


# ---------------------------------------------------------------- load scenarios (rules/load.smk)

LOAD = SETTINGS.load()
LOAD_DIR = "workload/load"
LOAD_REPORT = "reports/load"


def load_models():
    """The profiled models that the load: block applies to (none while it names no point)."""
    return [model for model in SETTINGS.load_models() if profiled(model)]


def load_point_files(model, ext="json"):
    return [
        f"{LOAD_DIR}/{model}/{point.scenario}/{point.point}.{ext}"
        for point in SETTINGS.load_points(model)
    ]


def load_report_files(models):
    if not models:
        return []
    formats = sorted(set(SETTINGS.style().formats) | {"png"})
    figures = ["latency_throughput"] + (["batching_heatmap"] if LOAD.batching else [])
    return (
        [f"{LOAD_REPORT}/{name}" for name in ("summary.csv", "best.csv", "best.md")]
        + [
            f"{LOAD_REPORT}/{model}/{figure}.{ext}"
            for model in models
            for figure in figures
            for ext in formats
        ]
        + [f"{LOAD_REPORT}/{model}/batching_parameters.txt" for model in models]
    )


# The load: keys that shape a point, and those that shape only open-loop points, so a
# closed-loop point is not measured again when only the arrivals change.
POINT_KEYS = (
    "batch_size",
    "window_s",
    "window_requests",
    "stable_windows",
    "max_windows",
    "stability_pct",
    "warmup_s",
    "processes",
)
OPEN_LOOP_KEYS = ("arrival", "seed", "max_in_flight", "schedule_tolerance_ms")


def load_point(wildcards):
    return SETTINGS.load_point(wildcards.model, wildcards.scenario, wildcards.point)


def load_server(wildcards):
    """The server: block with the scenario's batching parameters."""
    return canonical_json(
        {**SETTINGS.config["server"], "batching": load_point(wildcards).batching}
    )


def load_settings(wildcards):
    block = SETTINGS.config["load"]
    keys = POINT_KEYS + (OPEN_LOOP_KEYS if load_point(wildcards).mode == "open" else ())
    taken = {key: block[key] for key in keys}
    taken["resource_interval_s"] = SETTINGS.config["measure"]["resource_interval_s"]
    return canonical_json(taken)


def load_files():
    models = load_models()
    return [
        path
        for model in models
        for path in load_point_files(model, "csv")
        + load_point_files(model, "json")
        + [f"{LOAD_DIR}/{model}/summary.csv"]
    ] + load_report_files(models)


def report_files(models, device=layout.HOST):
    segment = layout.device_segment(device)
    return [
        f"reports/{segment}report.md",
        *expand(TABLE_FILES, device=segment),
        *figure_files(models, device),
    ]


# ---------------------------------------------------------------- what a run makes

MANIFEST = "workload/profiling/all"


def final_files(wildcards=None):
    """Every file a run makes, the manifest aside: statuses, results, report, figures.

    `rule all` and the manifest take them all as input, so whichever target is asked
    for, a deleted one is made again.
    """
    models = profiled_models()
    reports = [path for device in DEVICES for path in report_files(models, device)]
    ranking = ["reports/devices/ranking.md"] if len(DEVICES) > 1 else []
    return (
        statuses()
        + profiled_results()
        + reports
        + ranking
        + calibration_files()
        + load_files()
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

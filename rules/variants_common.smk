# The lookups of rules/variants.smk (docs/variants.md): paths, statuses, flags.
from serveprof.variants.catalog import REFERENCE, server_flags as variant_server_flags


wildcard_constraints:
    variant="|".join(
        re.escape(name)
        for name in sorted(
            {v for m in MODELS for v in SETTINGS.variants(m)} - {REFERENCE}
        )
    )
    or "(?!)",


def variant_status_path(model, variant):
    return f"data/model/variants/{model}/{variant}.json"


def variant_base_path(model, variant):
    return f"{inference_dir(model)}/variants/{variant}"


def variant_folder(model, variant):
    return f"workload/variants/{variant}/profiling/{model}"


def variant_status(model, variant):
    """What the last export of the variant found, or None before its first."""
    try:
        return json.loads(Path(variant_status_path(model, variant)).read_text())
    except (OSError, ValueError):
        return None


def variant_profiled(model, variant):
    """Built, or not yet tried: export_variant is a checkpoint, like acquire_model."""
    status = variant_status(model, variant)
    return status is None or status.get("status") == "ok"


def model_variants(model):
    return [name for name in SETTINGS.variants(model) if name != REFERENCE]


def variant_server(wildcards):
    """The server block with the flags the variant needs (--prefer_tflite_model, XLA's)."""
    block = dict(SETTINGS.config["server"])
    flags = variant_server_flags(wildcards.variant, SETTINGS.server().gpu)
    block["extra_flags"] = [*block["extra_flags"], *flags]
    return canonical_json(block)


def variant_flags(wildcards):
    flags = variant_server_flags(wildcards.variant, SETTINGS.server().gpu)
    return " ".join(f"--variant-flag={flag}" for flag in flags)


def variant_batches(pattern):
    return lambda wildcards: expand(
        pattern,
        model=wildcards.model,
        variant=wildcards.variant,
        batch=SETTINGS.batch_sizes(wildcards.model),
    )


def variant_results(model, variant):
    folder = variant_folder(model, variant)
    batches = SETTINGS.batch_sizes(model)
    return [
        f"{folder}/{model}.csv",
        f"{folder}/summary.csv",
        f"{folder}/coldstart.csv",
        f"{folder}/provenance.json",
        f"{folder}/accuracy.json",
        *expand(f"{folder}/{model}-b{{batch}}.csv", batch=batches),
        *expand(f"{folder}/stats/b{{batch}}.json", batch=batches),
    ]


def variant_statuses(wildcards=None):
    return [
        variant_status_path(model, variant)
        for model in profiled_models()
        for variant in model_variants(model)
    ]


def variant_files(wildcards=None):
    """Statuses and results of every variant (none with the default [fp32]), and their report."""
    models = [model for model in profiled_models() if model_variants(model)]
    if not models:
        return []
    files = variant_statuses()
    for model in models:
        for variant in model_variants(model):
            if variant_profiled(model, variant):
                files += variant_results(model, variant)
    return files + VARIANT_REPORT + variant_figures()


# What `serveprof variants-report` writes (serveprof/variants/report.py).
VARIANT_REPORT = [
    "reports/variants/variants.md",
    "reports/variants/throughput.csv",
    "reports/variants/accuracy.csv",
]


def variant_figures():
    """The speed-up and resources figures, in every format and PNG (the HTML report embeds it)."""
    formats = sorted(set(SETTINGS.style().formats) | {"png"})
    return expand(
        "reports/variants/{figure}.{ext}", figure=["speedup", "resources"], ext=formats
    )


# ---------------------------------------------------------------- per-layer profile

LAYER_FILES = [
    "breakdown.md",
    "ops.csv",
    "layers.csv",
    "blocks.csv",
    "nodes.csv",
    "profile.json",
    "blocks.png",
]


def profiled_base_path(wildcards):
    if wildcards.variant == REFERENCE:
        return inference_dir(wildcards.model)
    return variant_base_path(wildcards.model, wildcards.variant)


def profile_input(wildcards):
    """fp32's export, or the variant's status (a checkpoint output)."""
    if wildcards.variant == REFERENCE:
        return saved_model(wildcards)
    return variant_status_path(wildcards.model, wildcards.variant)


def profile_settings(wildcards=None):
    block = SETTINGS.config["profile"]
    return f"--warmup {block['warmup']} --iterations {block['iterations']} --top {block['top']}"


def layer_files(wildcards=None):
    """Per-layer profiles of every SavedModel variant at profile.batch_sizes (none by default).

    TFLite variants have no TensorFlow step stats to break down (docs/variants.md).
    """
    from serveprof.variants.catalog import TFLITE, variant as variant_named

    sizes = SETTINGS.config["profile"]["batch_sizes"]
    files = []
    for model in profiled_models() if sizes else []:
        for name in SETTINGS.variants(model):
            if variant_named(name).format == TFLITE:
                continue
            if name != REFERENCE and not variant_profiled(model, name):
                continue
            if name != REFERENCE:
                files.append(variant_status_path(model, name))
            files += expand(
                "workload/layers/{variant}/{model}/b{batch}/{file}",
                variant=name,
                model=model,
                batch=sizes,
                file=LAYER_FILES,
            )
    return files

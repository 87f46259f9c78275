# Variants (docs/variants.md): the same model in another precision or graph format,
# exported from the fp32 SavedModel, served by the same backend and measured by the same
# procedure into workload/variants/<variant>/profiling/<model>/ (the reference layout's
# files). fp32 is the reference: its jobs are the rules of profiling.smk and its paths
# stay workload/profiling/<model>/. With the default `variants: [fp32]` this file adds
# no job.
localrules:
    aggregate_variant,
    variants_report,


# Builds the variant from the fp32 export; a variant that cannot be built (an op with no
# int8 kernel, no TensorRT) gets an `unavailable` status with the reason, and the run
# goes on without it. A checkpoint: which variants are measured is known once it ran.
checkpoint export_variant:
    input:
        model=saved_model,
        acquired=status_path("{model}"),
    output:
        status=variant_status_path("{model}", "{variant}"),
        base=directory(variant_base_path("{model}", "{variant}")),
    log:
        "logs/export_variant/{model}-{variant}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        mem_mb=16000,
        runtime=60,
    params:
        input=input_settings,
        gpu="--gpu" if SETTINGS.server().gpu else "",
        source=lambda wildcards: MODELS[wildcards.model]["source"],
    shell:
        "TF_NUM_INTRAOP_THREADS={threads} TF_NUM_INTEROP_THREADS={threads}"
        " exec serveprof export-variant --model {wildcards.model} --variant {wildcards.variant}"
        " --reference {input.model} --out {output.base} --status {output.status}"
        " --input {params.input:q} --source {params.source} {params.gpu} > {log} 2>&1"


rule cold_start_variant:
    input:
        status=variant_status_path("{model}", "{variant}"),
    output:
        "workload/variants/{variant}/profiling/{model}/coldstart.csv",
    log:
        "logs/cold_start_variant/{model}-{variant}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=16000,
        runtime=30,
    params:
        base_path=lambda wildcards: variant_base_path(
            wildcards.model, wildcards.variant
        ),
        server=variant_server,
        input=input_settings,
        client=client_settings,
    shell:
        "exec serveprof coldstart --model {wildcards.model} --model-base-path {params.base_path}"
        " --server {params.server:q} --input {params.input:q} {params.client} --out {output} > {log} 2>&1"


rule measure_variant_batch:
    input:
        status=variant_status_path("{model}", "{variant}"),
    output:
        latencies="workload/variants/{variant}/profiling/{model}/{model}-b{batch}.csv",
        stats="workload/variants/{variant}/profiling/{model}/stats/b{batch}.json",
    log:
        "logs/measure_variant_batch/{model}-{variant}-b{batch}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=16000,
        runtime=120,
    params:
        base_path=lambda wildcards: variant_base_path(
            wildcards.model, wildcards.variant
        ),
        server=variant_server,
        input=input_settings,
        procedure=procedure_settings,
    shell:
        "exec serveprof measure --model {wildcards.model} --model-base-path {params.base_path}"
        " --batch-size {wildcards.batch} --server {params.server:q} --input {params.input:q}"
        " {params.procedure} --latencies {output.latencies} --stats {output.stats}"
        " > {log} 2>&1"


# fp32 and the variant served one after the other on the same seeded input set.
rule accuracy_variant:
    input:
        status=variant_status_path("{model}", "{variant}"),
        acquired=status_path("{model}"),
        reference=saved_model,
    output:
        "workload/variants/{variant}/profiling/{model}/accuracy.json",
    log:
        "logs/accuracy_variant/{model}-{variant}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=16000,
        runtime=30,
    params:
        reference=lambda wildcards: inference_dir(wildcards.model),
        base_path=lambda wildcards: variant_base_path(
            wildcards.model, wildcards.variant
        ),
        server=server_settings,
        flags=variant_flags,
        input=input_settings,
        client=client_settings,
        weights=lambda wildcards: (acquisition(wildcards.model) or {}).get("weights")
        or "unknown",
    shell:
        "exec serveprof accuracy --model {wildcards.model} --variant {wildcards.variant}"
        " --reference-base-path {params.reference} --model-base-path {params.base_path} {params.flags}"
        " --server {params.server:q} --input {params.input:q} {params.client} --weights {params.weights}"
        " --out {output} > {log} 2>&1"


rule aggregate_variant:
    input:
        stats=variant_batches(
            "workload/variants/{variant}/profiling/{model}/stats/b{batch}.json"
        ),
        latencies=variant_batches(
            "workload/variants/{variant}/profiling/{model}/{model}-b{batch}.csv"
        ),
        coldstart="workload/variants/{variant}/profiling/{model}/coldstart.csv",
        acquired=status_path("{model}"),
    output:
        durations="workload/variants/{variant}/profiling/{model}/{model}.csv",
        summary="workload/variants/{variant}/profiling/{model}/summary.csv",
        provenance="workload/variants/{variant}/profiling/{model}/provenance.json",
    log:
        "logs/aggregate_variant/{model}-{variant}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        config_hash=model_hash,
        out_dir=lambda wildcards: variant_folder(wildcards.model, wildcards.variant),
    shell:
        "exec serveprof aggregate --model {wildcards.model} --stats {input.stats}"
        " --latencies {input.latencies}"
        " --coldstart {input.coldstart} --acquired {input.acquired}"
        " --config-hash {params.config_hash} --out-dir {params.out_dir}"
        " > {log} 2>&1"


# Throughput per model and variant, speed-up against the accuracy change, and the
# variants that could not be built, with their reasons.
rule variants_report:
    input:
        statuses=variant_statuses,
        results=lambda wildcards: [
            path
            for path in variant_files()
            if path not in VARIANT_REPORT + variant_figures()
        ],
        reference=profiled_results,
    output:
        report=report(
            VARIANT_REPORT[0],
            caption="../report/variants.rst",
            category="Variants",
        ),
        tables=VARIANT_REPORT[1:],
        figures=report(
            [path for path in variant_figures() if path.endswith(".png")],
            caption="../report/variants_figures.rst",
            category="Variants",
        ),
        other=[path for path in variant_figures() if not path.endswith(".png")],
    log:
        "logs/variants_report.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        variants=lambda wildcards: canonical_json(
            {m: SETTINGS.variants(m) for m in profiled_models() if model_variants(m)}
        ),
        style=plot_style,
    shell:
        "exec serveprof variants-report --variants {params.variants:q} --results workload"
        " --statuses data/model/variants --style {params.style:q} --out reports/variants > {log} 2>&1"


# Where the time goes, from the serving Session's own traces: a job of its own that
# holds the serving slot, so it never runs beside a timed measurement.
rule profile_layers:
    input:
        profile_input,
    output:
        breakdown=report(
            "workload/layers/{variant}/{model}/b{batch}/breakdown.md",
            caption="../report/layers.rst",
            category="{model}",
            subcategory="Per-layer breakdown",
        ),
        figure=report(
            "workload/layers/{variant}/{model}/b{batch}/blocks.png",
            caption="../report/layers.rst",
            category="{model}",
            subcategory="Per-layer breakdown",
        ),
        tables=expand(
            "workload/layers/{{variant}}/{{model}}/b{{batch}}/{file}",
            file=[
                name
                for name in LAYER_FILES
                if name not in ("breakdown.md", "blocks.png")
            ],
        ),
    log:
        "logs/profile_layers/{model}-{variant}-b{batch}.log",
    wildcard_constraints:
        variant="[a-z0-9_]+",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        mem_mb=16000,
        runtime=60,
    params:
        base_path=profiled_base_path,
        server=server_settings,
        input=input_settings,
        profile=profile_settings,
        out_dir=lambda wildcards, output: os.path.dirname(output.breakdown),
    shell:
        "exec serveprof profile-layers --model-base-path {params.base_path}"
        " --batch-size {wildcards.batch} {params.profile} --input {params.input:q}"
        " --server {params.server:q} --title '{wildcards.model} {wildcards.variant} batch {wildcards.batch}'"
        " --out-dir {params.out_dir} > {log} 2>&1"

localrules:
    aggregate_model,


# Each serving job starts its own server (a freshly loaded model) and tears it down.
# Serving jobs and exports declare `serving_slot=1`: a machine has one slot (the
# default profile), so none of them shares it with another; on a cluster the slot is
# each job's own (profiles/slurm scopes it per job and gives the job a whole node).
# `threads` reserves cores from the scheduler and is not passed on: the server's thread
# pools are `server.intra_op_threads`/`inter_op_threads`, part of what is measured.
# `{device}` is "" on the host and "devices/<name>/" on a device (rules/common.smk), whose
# limits the launcher applies to the server; `threads` and `mem_mb` follow the device.
rule cold_start:
    input:
        model=saved_model,
    output:
        "workload/{device}profiling/{model}/coldstart.csv",
    log:
        "logs/cold_start/{device}{model}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: device_threads
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=device_mem_mb,
        runtime=30,
    params:
        base_path=lambda wildcards: inference_dir(wildcards.model),
        server=server_settings,
        input=input_settings,
        client=client_settings,
        disturbance=disturbance_settings,
        device=device_settings,
    shell:
        "exec serveprof coldstart --model {wildcards.model} --model-base-path {params.base_path}"
        " --server {params.server:q} --input {params.input:q} {params.client} {params.disturbance}"
        " --device {params.device:q}"
        " --out {output} > {log} 2>&1"


# With measure.repeats above 1, `{repeat}` is "repeats/r<R>/" and each repeat is a job of
# its own on a fresh server; fold_repeats then writes the cell's files.
rule measure_batch:
    input:
        model=saved_model,
    output:
        latencies="workload/{device}profiling/{model}/{repeat}{model}-b{batch}.csv",
        stats="workload/{device}profiling/{model}/{repeat}stats/b{batch}.json",
    log:
        "logs/measure_batch/{device}{repeat}{model}-b{batch}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: device_threads
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=device_mem_mb,
        # Worst case on a CPU: model load, tracing per batch size, warm-up, then the
        # `measure.max_seconds` cap plus `min_requests` of a slow batch-32 model.
        runtime=120,
    params:
        base_path=lambda wildcards: inference_dir(wildcards.model),
        server=server_settings,
        input=input_settings,
        procedure=procedure_settings,
        device=device_settings,
        repeat=repeat_flag,
    shell:
        "exec serveprof measure --model {wildcards.model} --model-base-path {params.base_path}"
        " --batch-size {wildcards.batch} --server {params.server:q} --input {params.input:q}"
        " {params.procedure} --device {params.device:q} {params.repeat}"
        " --latencies {output.latencies} --stats {output.stats} > {log} 2>&1"


if SETTINGS.repeats > 1:

    localrules:
        fold_repeats,

    rule fold_repeats:
        input:
            stats=repeats(
                "workload/{device}profiling/{model}/{repeat}stats/b{batch}.json"
            ),
            latencies=repeats(
                "workload/{device}profiling/{model}/{repeat}{model}-b{batch}.csv"
            ),
        output:
            latencies="workload/{device}profiling/{model}/{model}-b{batch}.csv",
            stats="workload/{device}profiling/{model}/stats/b{batch}.json",
        log:
            "logs/fold_repeats/{device}{model}-b{batch}.log",
        conda:
            "../envs/serveprof.yaml"
        params:
            max_cv_pct=SETTINGS.max_cv_pct,
        shell:
            "exec serveprof fold --stats {input.stats} --latencies {input.latencies}"
            " --max-cv-pct {params.max_cv_pct} --out-latencies {output.latencies}"
            " --out-stats {output.stats} > {log} 2>&1"


rule aggregate_model:
    input:
        stats=per_batch("workload/{device}profiling/{model}/stats/b{batch}.json"),
        latencies=per_batch("workload/{device}profiling/{model}/{model}-b{batch}.csv"),
        coldstart="workload/{device}profiling/{model}/coldstart.csv",
        acquired=status_path("{model}"),
    output:
        durations=report(
            "workload/{device}profiling/{model}/{model}.csv",
            caption="../report/durations.rst",
            category="{model}",
            subcategory="Tables",
        ),
        summary=report(
            "workload/{device}profiling/{model}/summary.csv",
            caption="../report/summary.rst",
            category="{model}",
            subcategory="Tables",
        ),
        provenance="workload/{device}profiling/{model}/provenance.json",
    log:
        "logs/aggregate_model/{device}{model}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        config_hash=model_hash,
        out_dir=lambda wildcards: f"{results_dir(wildcards)}/{wildcards.model}",
    shell:
        "exec serveprof aggregate --model {wildcards.model} --stats {input.stats}"
        " --latencies {input.latencies}"
        " --coldstart {input.coldstart} --acquired {input.acquired}"
        " --config-hash {params.config_hash} --out-dir {params.out_dir}"
        " > {log} 2>&1"

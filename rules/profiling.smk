localrules:
    aggregate_model,


# Each serving job starts its own server (a freshly loaded model) and tears it down.
# Serving jobs and exports declare `serving_slot=1`: a machine has one slot (the
# default profile), so none of them shares it with another; on a cluster the slot is
# each job's own (profiles/slurm scopes it per job and gives the job a whole node).
# `threads` reserves cores from the scheduler and is not passed on: the server's thread
# pools are `server.intra_op_threads`/`inter_op_threads`, part of what is measured.
rule cold_start:
    input:
        model=saved_model,
    output:
        "workload/profiling/{model}/coldstart.csv",
    log:
        "logs/cold_start/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=16000,
        runtime=30,
    params:
        base_path=lambda wildcards: inference_dir(wildcards.model),
        server=server_settings,
        input=input_settings,
        client=client_settings,
        disturbance=disturbance_settings,
    shell:
        "exec serveprof coldstart --model {wildcards.model} --model-base-path {params.base_path}"
        " --server {params.server:q} --input {params.input:q} {params.client} {params.disturbance}"
        " --out {output} > {log} 2>&1"


rule measure_batch:
    input:
        model=saved_model,
    output:
        latencies="workload/profiling/{model}/{model}-b{batch}.csv",
        stats="workload/profiling/{model}/stats/b{batch}.json",
    log:
        "logs/measure_batch/{model}-b{batch}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=16000,
        # Worst case on a CPU: model load, tracing per batch size, warm-up, then the
        # `measure.max_seconds` cap plus `min_requests` of a slow batch-32 model.
        runtime=120,
    params:
        base_path=lambda wildcards: inference_dir(wildcards.model),
        server=server_settings,
        input=input_settings,
        procedure=procedure_settings,
    shell:
        "exec serveprof measure --model {wildcards.model} --model-base-path {params.base_path}"
        " --batch-size {wildcards.batch} --server {params.server:q} --input {params.input:q}"
        " {params.procedure} --latencies {output.latencies} --stats {output.stats}"
        " > {log} 2>&1"


rule aggregate_model:
    input:
        stats=per_batch("workload/profiling/{model}/stats/b{batch}.json"),
        latencies=per_batch("workload/profiling/{model}/{model}-b{batch}.csv"),
        coldstart="workload/profiling/{model}/coldstart.csv",
        acquired=status_path("{model}"),
    output:
        durations=report(
            "workload/profiling/{model}/{model}.csv",
            caption="../report/durations.rst",
            category="{model}",
            subcategory="Tables",
        ),
        summary=report(
            "workload/profiling/{model}/summary.csv",
            caption="../report/summary.rst",
            category="{model}",
            subcategory="Tables",
        ),
        provenance="workload/profiling/{model}/provenance.json",
    log:
        "logs/aggregate_model/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        config_hash=model_hash,
    shell:
        "exec serveprof aggregate --model {wildcards.model} --stats {input.stats}"
        " --latencies {input.latencies}"
        " --coldstart {input.coldstart} --acquired {input.acquired}"
        " --config-hash {params.config_hash} --out-dir workload/profiling/{wildcards.model}"
        " > {log} 2>&1"

localrules:
    acquire_model,


# A checkpoint, because whether a model can be obtained (network, staged tarball,
# weights) is only known once this has run; Snakemake then asks again which results to
# make, and a model that was not obtained is reported as not profiled.
# A local rule: on a cluster the login node has the internet the compute nodes lack.
# It runs when the status is missing (first run, or deleted to ask for a new try) or its
# source keys change (rules/common.smk).
checkpoint acquire_model:
    output:
        status_path("{model}"),
    log:
        "logs/acquire_model/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        spec=acquisition_spec,
        weights=weights_policy,
    shell:
        "exec serveprof acquire --model {wildcards.model} --spec {params.spec:q}"
        " --download-dir data/model/download --out {output} {params.weights} > {log} 2>&1"


# Holds the serving slot like the serving jobs (rules/profiling.smk): an export takes
# every core it is given and GBs of memory, which would disturb a measurement running
# beside it. `threads` bounds TensorFlow's thread pools in the export.
rule export_model:
    input:
        acquired=status_path("{model}"),
    output:
        directory("data/model/inference/{model}/1"),
    log:
        "logs/export_model/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        mem_mb=16000,
        runtime=60,
    params:
        spec=export_spec,
        warmup=warmup_flags,
    shell:
        "TF_NUM_INTRAOP_THREADS={threads} TF_NUM_INTEROP_THREADS={threads}"
        " exec serveprof export --model {wildcards.model} --spec {params.spec:q}"
        " --acquired {input.acquired} --out {output} {params.warmup} > {log} 2>&1"

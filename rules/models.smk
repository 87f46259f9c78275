localrules:
    acquire_model,


# A checkpoint, because whether a model can be obtained (network, staged tarball,
# weights) is only known once this has run; the DAG then holds jobs only for the
# models that were obtained, and the rest are reported as not profiled.
# A local rule: on a cluster the login node has the internet the compute nodes lack.
checkpoint acquire_model:
    output:
        "data/model/acquired/{model}.json",
    log:
        "logs/acquire_model/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        spec=model_spec,
        flags=acquisition_flags,
        retry_when_staged=staged_since_unavailable,
    shell:
        "exec serveprof acquire --model {wildcards.model} --spec {params.spec:q}"
        " --download-dir data/model/download --out {output} {params.flags} > {log} 2>&1"


rule export_model:
    input:
        acquired="data/model/acquired/{model}.json",
    output:
        directory("data/model/inference/{model}/1"),
    log:
        "logs/export_model/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        spec=model_spec,
    shell:
        "exec serveprof export --model {wildcards.model} --spec {params.spec:q}"
        " --acquired {input.acquired} --out {output} > {log} 2>&1"

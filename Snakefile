# serveprof: profile TensorFlow models the way TensorFlow Serving serves them.
#
#   snakemake --cores 1 workload/profiling/all
#
# Rules stay thin: each calls one `serveprof` command; the logic lives in the package.
import os

from snakemake.utils import min_version

min_version("9.0")

# With `--sdm conda`, envs/serveprof.post-deploy.sh installs serveprof into the rules'
# environment from this checkout; Snakemake runs it with this process's environment.
os.environ.setdefault("SERVEPROF_SOURCE", workflow.basedir)


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/profiling.smk"
include: "rules/report.smk"


# Writes a small JSON manifest: on a cluster it runs where Snakemake runs, not via sbatch.
localrules:
    all,


rule all:
    input:
        # Listed apart from the rest so that every model's acquisition is scheduled at
        # once; the function below waits for them (it reads the checkpoint).
        statuses=acquisition_statuses,
        results=profiled_outputs,
    output:
        "workload/profiling/all",
    log:
        "logs/all.log",
    conda:
        "envs/serveprof.yaml"
    params:
        models=list(MODELS),
    shell:
        "exec serveprof manifest --models {params.models} --acquired-dir data/model/acquired"
        " --results workload/profiling --out {output} > {log} 2>&1"

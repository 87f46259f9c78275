# serveprof: profile TensorFlow models the way TensorFlow Serving serves them.
#
#   snakemake --cores 1 workload/profiling/all     # or just `snakemake --cores 1`
#
# Rules stay thin: each calls one `serveprof` command; the logic lives in the package,
# and serveprof.settings owns the config (its schema, defaults and typed settings).
import os

from snakemake.utils import min_version

# 9.0 to 9.1.1 ignore changed params, which the workflow reruns on (snakemake#3491).
min_version("9.5")

# With `--sdm conda`, envs/serveprof.post-deploy.sh installs serveprof into the rules'
# environment from this checkout; Snakemake runs it with this process's environment.
os.environ.setdefault("SERVEPROF_SOURCE", workflow.basedir)


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/variants_common.smk"
include: "rules/models.smk"
include: "rules/profiling.smk"
include: "rules/variants.smk"
include: "rules/report.smk"
include: "rules/load.smk"
include: "rules/calibration.smk"
include: "rules/ranking.smk"


# The default target. It has no output, so Snakemake checks that every file it lists
# exists and makes again whatever was deleted (a target file would only be checked
# itself). workload/profiling/all, the manifest, is one of them.
rule all:
    default_target: True
    input:
        final_files,
        MANIFEST,

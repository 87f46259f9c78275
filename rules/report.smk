localrules:
    tables,
    plot_overview,
    plot_model,
    manifest,


rule tables:
    input:
        statuses=statuses,
        results=profiled_results,
    output:
        report=report(
            "reports/{device}report.md",
            caption="../report/report.rst",
            category="Overview",
        ),
        # The same files whatever was profiled, so each is an output of its own and a
        # deleted one is made again.
        tables=TABLE_FILES,
    log:
        "logs/{device}tables.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        models=list(MODELS),
        results=results_dir,
    shell:
        "exec serveprof tables --results {params.results} --acquired-dir data/model/acquired"
        " --models {params.models} --out reports/{wildcards.device} > {log} 2>&1"


# Colours follow the sorted list of every configured model (--all-models), so a model
# keeps its colour in every figure whichever others could be profiled.
rule plot_overview:
    input:
        statuses=statuses,
        results=profiled_results,
    output:
        figure=report(
            "reports/{device}figures/{figure}.png",
            caption="../report/overview.rst",
            category="Overview",
        ),
        other_formats=other_formats("reports/{device}figures/{figure}"),
    log:
        "logs/plot_overview/{device}{figure}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        models=lambda wildcards: profiled_models(),
        all_models=list(MODELS),
        style=plot_style,
        results=results_dir,
    shell:
        "exec serveprof plot --results {params.results} --models {params.models}"
        " --all-models {params.all_models} --style {params.style:q}"
        " --only {wildcards.figure} --out reports/{wildcards.device}figures > {log} 2>&1"


rule plot_model:
    input:
        summary="workload/{device}profiling/{model}/summary.csv",
        latencies=per_batch("workload/{device}profiling/{model}/{model}-b{batch}.csv"),
    output:
        figure=report(
            "reports/{device}figures/{model}/distribution.png",
            caption="../report/distribution.rst",
            category="{model}",
            subcategory="Figures",
        ),
        other_formats=other_formats("reports/{device}figures/{model}/distribution"),
    log:
        "logs/plot_model/{device}{model}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        style=plot_style,
        results=results_dir,
    shell:
        "exec serveprof plot --results {params.results} --model {wildcards.model}"
        " --style {params.style:q} --only distribution --out reports/{wildcards.device}figures > {log} 2>&1"


# Computed once every rule file is read: final_files() includes rules/variants.smk's files.
MANIFEST_RUN = manifest_run()


# The run's table of contents, and its verdict: with `strict`, a model not profiled
# fails this job (and so the run) after every other has run. `run` (manifest_run in
# rules/common.smk) is what makes `snakemake workload/profiling/all` rebuild a result
# deleted from under it.
rule manifest:
    input:
        final_files,
    output:
        MANIFEST,
    log:
        "logs/manifest.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        models=list(MODELS),
        run=MANIFEST_RUN,
        strict=strict_flag,
        results=results_dirs,
    shell:
        "exec serveprof manifest --models {params.models} --acquired-dir data/model/acquired"
        " --results {params.results} --run {params.run} {params.strict} --out {output} > {log} 2>&1"

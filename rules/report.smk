localrules:
    tables,
    plot_overview,
    plot_model,


rule tables:
    input:
        statuses=acquisition_statuses,
        results=profiled_results,
    output:
        report=report(
            "reports/report.md",
            caption="../report/report.rst",
            category="Overview",
        ),
        # CSV and markdown per table; which tables depends on what was profiled, so
        # `profiled_outputs` reruns this job when one of them is deleted.
        tables=directory("reports/tables"),
    log:
        "logs/tables.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        models=list(MODELS),
    shell:
        "exec serveprof tables --results workload/profiling --acquired-dir data/model/acquired"
        " --models {params.models} --out reports > {log} 2>&1"


# Colours follow the sorted list of every configured model (--all-models), so a model
# keeps its colour in every figure whichever others could be profiled.
rule plot_overview:
    input:
        profiled_results,
    output:
        figure=report(
            "reports/figures/{figure}.png",
            caption="../report/overview.rst",
            category="Overview",
        ),
        other_formats=other_formats("reports/figures/{figure}"),
    log:
        "logs/plot_overview/{figure}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        models=lambda wildcards: obtained_models(),
        all_models=list(MODELS),
        style=plot_style,
    shell:
        "exec serveprof plot --results workload/profiling --models {params.models}"
        " --all-models {params.all_models} --style {params.style:q}"
        " --only {wildcards.figure} --out reports/figures > {log} 2>&1"


rule plot_model:
    input:
        summary="workload/profiling/{model}/summary.csv",
        latencies=per_batch_latencies,
    output:
        figure=report(
            "reports/figures/{model}/distribution.png",
            caption="../report/distribution.rst",
            category="{model}",
            subcategory="Figures",
        ),
        other_formats=other_formats("reports/figures/{model}/distribution"),
    log:
        "logs/plot_model/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        style=plot_style,
    shell:
        "exec serveprof plot --results workload/profiling --model {wildcards.model}"
        " --style {params.style:q} --only distribution --out reports/figures > {log} 2>&1"

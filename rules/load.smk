# Load scenarios (docs/load.md): one job per (model, scenario, point), each against a
# fresh server with the scenario's batching parameters; nothing here while the load:
# block names no point.


wildcard_constraints:
    scenario=r"(?:closed|open)(?:-[A-Za-z0-9.]+)*",
    point=r"c[1-9][0-9]*|r[0-9]+(?:\.[0-9]+)?",


localrules:
    load_summary,
    load_report,


rule measure_load:
    input:
        model=saved_model,
    output:
        requests="workload/load/{model}/{scenario}/{point}.csv",
        summary="workload/load/{model}/{scenario}/{point}.json",
    log:
        "logs/measure_load/{model}/{scenario}/{point}.log",
    conda:
        "../envs/serveprof.yaml"
    threads: 4
    resources:
        serving_slot=1,
        gpu=1 if SETTINGS.server().gpu else 0,
        mem_mb=16000,
        # Model load, warm-up, then at most load.max_windows windows.
        runtime=60,
    params:
        base_path=lambda wildcards: inference_dir(wildcards.model),
        server=load_server,
        input=input_settings,
        client=client_settings,
        load=load_settings,
        disturbance=disturbance_settings,
    shell:
        "exec serveprof load --model {wildcards.model} --scenario {wildcards.scenario} --point {wildcards.point}"
        " --model-base-path {params.base_path} --server {params.server:q} --input {params.input:q}"
        " {params.client} --load {params.load:q} {params.disturbance}"
        " --requests-out {output.requests} --summary-out {output.summary} > {log} 2>&1"


rule load_summary:
    input:
        points=lambda wildcards: load_point_files(wildcards.model),
    output:
        "workload/load/{model}/summary.csv",
    log:
        "logs/load_summary/{model}.log",
    conda:
        "../envs/serveprof.yaml"
    shell:
        "exec serveprof load-summary --model {wildcards.model} --points {input.points} --out {output} > {log} 2>&1"


rule load_report:
    input:
        statuses=statuses,
        summaries=lambda wildcards: expand(
            "workload/load/{model}/summary.csv", model=load_models()
        ),
    output:
        best=report(
            "reports/load/best.md",
            caption="../report/load_best.rst",
            category="Load",
        ),
        tables=["reports/load/summary.csv", "reports/load/best.csv"],
        figures=report(
            [
                path
                for path in load_report_files(load_models())
                if path.endswith(".png")
            ],
            caption="../report/load_figures.rst",
            category="Load",
        ),
        other=[
            path
            for path in load_report_files(load_models())
            if not path.endswith((".png", ".md", "summary.csv", "best.csv"))
        ],
    log:
        "logs/load_report.log",
    conda:
        "../envs/serveprof.yaml"
    params:
        slo=(f"--slo-p99-ms {LOAD.slo_p99_ms}" if LOAD.slo_p99_ms is not None else ""),
        heatmap="--heatmap" if LOAD.batching else "",
        style=plot_style,
    shell:
        "exec serveprof load-report --summaries {input.summaries} --points-dir workload/load"
        " {params.slo} {params.heatmap} --style {params.style:q} --out reports/load > {log} 2>&1"

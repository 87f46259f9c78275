# With more than one device: the models ranked per device by latency and peak memory,
# and where the order flips between devices (serveprof/report/ranking.py).
if len(DEVICES) > 1:

    localrules:
        rank_devices,

    rule rank_devices:
        input:
            statuses=statuses,
            results=profiled_results,
        output:
            report="reports/devices/ranking.md",
            tables=expand("reports/devices/{table}.csv", table=["ranking", "flips"]),
        log:
            "logs/rank_devices.log",
        conda:
            "../envs/serveprof.yaml"
        params:
            devices=lambda wildcards: " ".join(
                f"{name}={layout.results_dir(name)}" for name in DEVICES
            ),
            models=lambda wildcards: profiled_models(),
        shell:
            "exec serveprof rank --devices {params.devices} --models {params.models}"
            " --out reports/devices > {log} 2>&1"

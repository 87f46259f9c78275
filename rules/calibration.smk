# `serveprof calibrate` (docs/calibration.md), when `calibration.measured` names a CSV of
# on-device measurements. An on-device name is fitted against the host's results, or
# against a configured device's when `calibration.profiles` maps it to one.
if SETTINGS.calibration["measured"]:

    localrules:
        calibrate,

    rule calibrate:
        input:
            measured=SETTINGS.calibration["measured"],
            results=profiled_results,
        output:
            report="reports/calibration/calibration.md",
            tables=expand(
                "reports/calibration/{table}.{ext}",
                table=["fits", "points", "predictions", "ranks"],
                ext=["csv", "md"],
            ),
            latency=expand(
                "reports/calibration/latency.{ext}",
                ext=sorted(set(SETTINGS.style().formats)),
            ),
        log:
            "logs/calibrate.log",
        conda:
            "../envs/serveprof.yaml"
        params:
            flags=calibration_flags,
            style=plot_style,
        shell:
            "exec serveprof calibrate --measured {input.measured} {params.flags}"
            " --style {params.style:q} --out reports/calibration > {log} 2>&1"

"""Find out whether a model can be obtained, and obtain it: the acquisition status.

A model that cannot be obtained for reasons of the environment (no network, nothing
staged, a 404, a corrupt download) gets status ``unavailable`` with a reason and a
fix, so the run goes on and the report lists it as not profiled. A mistake in the
config itself (an unknown Keras application, a local SavedModel path that does not
exist) raises ServeprofError: staging files cannot fix it, and hiding it as "not
profiled" at the end of a long run would waste that run.

The status is a pure function of what acquisition found (no timestamp), so acquiring
an obtained model again writes the same bytes, and the workflow, which compares
checksums of small inputs, reruns nothing downstream of it. ``missing_file`` names the
file acquisition looked for and did not find (a zoo tarball, a Keras weights file);
the fix says where to put it (and `serveprof acquire` adds how to ask for a new try).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serveprof.errors import ServeprofError
from serveprof.models.archive import BadArchive, check_zoo_tarball, tarball_file_name
from serveprof.models.download import DownloadFailed, download, sha256_of
from serveprof.models.log import log

RANDOM_WEIGHTS_NOTE = "built with random weights instead (latency of these dense CNNs does not depend on weight values)"


def status(
    model: str,
    spec: Mapping[str, Any],
    state: str,
    *,
    artifact: str | None = None,
    weights: str | None = None,
    reason: str | None = None,
    fix: str | None = None,
    sha256: str | None = None,
    missing_file: str | None = None,
) -> dict:
    return {
        "model": model,
        "status": state,
        "source": spec["source"],
        "type": spec["type"],
        "artifact": artifact,
        "weights": weights,
        "reason": reason,
        "fix": fix,
        "sha256": sha256,
        "missing_file": missing_file,
    }


def acquire_zoo(model: str, spec: Mapping[str, Any], download_dir: Path) -> dict:
    url, expected = spec["url"], spec.get("sha256")
    tarball = Path(download_dir) / tarball_file_name(url)
    staged = tarball.exists()
    if staged:
        log("acquire", f"using {tarball} (already there: staged or downloaded earlier), no network needed")
        if expected and sha256_of(tarball) != expected.lower():
            return status(
                model,
                spec,
                "unavailable",
                artifact=str(tarball),
                reason=f"{tarball} has a sha256 other than the configured {expected.lower()}",
                fix=f"replace {tarball} with the tarball from {url}, or delete it to download it again",
            )
    else:
        log("acquire", f"downloading {url} to {tarball}")
        try:
            download(url, tarball, sha256=expected)
        except DownloadFailed as error:
            return status(
                model,
                spec,
                "unavailable",
                reason=error.problem,
                missing_file=str(tarball),
                fix=f"stage the tarball at {tarball} (download {url} on a machine with internet)",
            )
    try:
        check_zoo_tarball(tarball)
    except BadArchive as error:
        if not staged:
            tarball.unlink()  # our own download is broken: never leave it to be taken as staged next time
        return status(model, spec, "unavailable", artifact=str(tarball), reason=error.problem, fix=error.fix)
    return status(model, spec, "ok", artifact=str(tarball), weights="zoo", sha256=sha256_of(tarball))


def acquire_keras(model: str, spec: Mapping[str, Any], allow_random_weights: bool) -> dict:
    from serveprof.models.keras_apps import (
        WeightsUnavailable,
        fetch_weights,
        imagenet_weights_file,
        resolve_application,
    )

    application = spec["application"]
    resolve_application(application)
    if spec.get("weights", "imagenet") == "random":
        return status(model, spec, "ok", weights="random")
    weights = imagenet_weights_file(application, spec.get("input_size"))
    cached = weights.cache_path()
    try:
        path = fetch_weights(weights)
    except WeightsUnavailable as error:
        reason = (
            f"ImageNet weights {weights.fname} for {application} could not be fetched from {weights.origin}: {error}"
        )
        fix = f"put {weights.fname} (from {weights.origin}) in {cached.parent}/"
        if allow_random_weights:
            return status(
                model,
                spec,
                "ok",
                weights="random",
                reason=f"{reason}; {RANDOM_WEIGHTS_NOTE}",
                fix=f"{fix} to profile with ImageNet weights",
                missing_file=str(cached),
            )
        return status(
            model,
            spec,
            "unavailable",
            reason=reason,
            fix=f"{fix}, or set allow_random_weights: true",
            missing_file=str(cached),
        )
    return status(model, spec, "ok", artifact=str(path), weights="imagenet", sha256=sha256_of(path))


def acquire_saved_model(model: str, spec: Mapping[str, Any]) -> dict:
    from serveprof.models.saved_model_import import find_saved_model

    found = find_saved_model(spec["path"])
    return status(model, spec, "ok", artifact=str(found), weights="saved_model")


def acquire(model: str, spec: Mapping[str, Any], download_dir: str | Path, allow_random_weights: bool = True) -> dict:
    """The acquisition status of ``model``; raises ServeprofError for mistakes in ``spec``."""
    source = spec.get("source")
    if source == "tf2_zoo":
        return acquire_zoo(model, spec, Path(download_dir))
    if source == "keras":
        return acquire_keras(model, spec, allow_random_weights)
    if source == "saved_model":
        return acquire_saved_model(model, spec)
    raise ServeprofError(f"model {model} has source {source!r}", "set source to one of keras, tf2_zoo, saved_model")

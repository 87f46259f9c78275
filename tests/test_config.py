"""Config validation: every invalid config is refused before any job runs, naming the key and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serveprof import settings
from serveprof.errors import ServeprofError
from serveprof.launch.spec import ServerSettings
from serveprof.measure.inputs import InputSettings
from serveprof.measure.procedure import ProcedureSettings
from serveprof.settings import check, read_config_file, with_defaults
from serveprof.settings import merge as merge_configs

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def tiny_config(**overrides) -> dict:
    config = {
        "models": {"m": {"source": "keras", "type": "classification", "application": "MobileNetV2"}},
        "batch_sizes": [1, 2],
    }
    config.update(overrides)
    return config


# (description, config change, key named in the message, words of the fix)
BAD_CONFIGS = [
    (
        "unknown source",
        {"models": {"m": {"source": "hub", "type": "classification"}}},
        "models.m.source",
        "keras, tf2_zoo, saved_model",
    ),
    (
        "keras without application",
        {"models": {"m": {"source": "keras", "type": "classification"}}},
        "models.m",
        "application:",
    ),
    ("zoo without url", {"models": {"m": {"source": "tf2_zoo", "type": "detection"}}}, "models.m", "url:"),
    (
        "saved_model without path",
        {"models": {"m": {"source": "saved_model", "type": "detection"}}},
        "models.m",
        "path:",
    ),
    ("batch size zero", {"batch_sizes": [0, 1]}, "batch_sizes[0]", "whole numbers of 1 or more"),
    ("negative batch size", {"batch_sizes": [-4]}, "batch_sizes[0]", "whole numbers of 1 or more"),
    ("non-integer batch size", {"batch_sizes": [1, 2.5]}, "batch_sizes[1]", "whole numbers"),
    ("duplicate batch sizes", {"batch_sizes": [1, 2, 2]}, "batch_sizes", "distinct"),
    ("negative requests", {"measure": {"requests": -5}}, "measure.requests", "at least 1"),
    ("negative time cap", {"measure": {"max_seconds": -1}}, "measure.max_seconds", "positive number of seconds"),
    ("negative warm-up", {"measure": {"warmup_requests": -1}}, "measure.warmup_requests", "0 or more"),
    ("unknown top-level key", {"modles": {}}, "unknown key(s) 'modles'", "known top-level keys"),
    ("unknown measure key", {"measure": {"request": 5}}, "measure: unknown key(s) 'request'", "measure keys are"),
    (
        "library name as transport",
        {"measure": {"transport": "grpcio"}},
        "measure.transport",
        "builtin (serveprof's own connections) or library",
    ),
    (
        "malformed URL",
        {"models": {"m": {"source": "tf2_zoo", "type": "detection", "url": "htp:/example.org/x.tar.gz"}}},
        "models.m.url",
        "http(s) URL",
    ),
    (
        "model key unusable as a directory",
        {"models": {"../evil": {"source": "keras", "type": "classification", "application": "X"}}},
        "model key '../evil'",
        "directory name",
    ),
    (
        "per-model batch override",
        {"models": {"m": {"source": "keras", "type": "classification", "application": "X", "batch_sizes": [0]}}},
        "models.m.batch_sizes[0]",
        "whole numbers",
    ),
    # JSON Schema counts 2.0 as an integer; a job would then get "2.0" on its command line.
    ("batch size written 2.0", {"batch_sizes": [1, 2.0]}, "batch_sizes[1]", "write 2, not 2.0"),
    ("request count written 1000.0", {"measure": {"requests": 1000.0}}, "measure.requests", "write 1000, not 1000.0"),
    (
        "input size written 32.0",
        {"models": {"m": {"source": "keras", "type": "classification", "application": "X", "input_size": [32.0, 32]}}},
        "models.m.input_size[0]",
        "write 32, not 32.0",
    ),
    (
        "batch size true",
        {"batch_sizes": [True]},
        "batch_sizes[0]: True is a yes/no value",
        "whole numbers of 1 or more",
    ),
    (
        "quoted request count",
        {"measure": {"requests": "1000"}},
        "measure.requests: '1000' is text",
        "write 1000 without quotes",
    ),
    (
        "time cap not a number",
        {"measure": {"max_seconds": float("nan")}},
        "measure.max_seconds: nan is not a finite number",
        "positive number of seconds",
    ),
    ("negative request floor", {"measure": {"min_requests": 0}}, "measure.min_requests", "at least 1"),
    (
        "keep_awake as text",
        {"measure": {"keep_awake": "yes"}},
        "measure.keep_awake",
        "set measure.keep_awake to true (keep every CPU awake during a series) or false",
    ),
    (
        "negative warm-up cap",
        {"measure": {"warmup_max_seconds": -1}},
        "measure.warmup_max_seconds",
        "0 or more seconds",
    ),
    (
        "negative startup timeout",
        {"server": {"startup_timeout_s": 0}},
        "server.startup_timeout_s",
        "positive number of seconds",
    ),
    (
        "unknown server key",
        {"server": {"backend": "embedded", "port": 8500}},
        "server: unknown key(s) 'port'",
        "server keys are",
    ),
    (
        "URL naming a folder",
        {"models": {"m": {"source": "tf2_zoo", "type": "detection", "url": "http://h/.."}}},
        "models.m.url",
        "ending in its file name",
    ),
    (
        "keras model with a zoo url",
        {
            "models": {
                "m": {"source": "keras", "type": "classification", "application": "X", "url": "http://h/x.tar.gz"}
            }
        },
        "models.m.url: a keras model does not take url",
        "remove url",
    ),
]


@pytest.mark.parametrize("description, change, key, fix", BAD_CONFIGS, ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_names_key_and_fix(description, change, key, fix):
    with pytest.raises(ServeprofError) as caught:
        check(tiny_config(**change))
    message = str(caught.value)
    assert key in message, message
    assert fix in message, message


def test_all_problems_are_reported_at_once():
    with pytest.raises(ServeprofError) as caught:
        check(tiny_config(batch_sizes=[0], measure={"requests": -1}, extra=1))
    assert "3 problem(s)" in str(caught.value)


def test_default_config_is_valid_and_is_the_seed_workload():
    loaded = settings.load_files(
        [REPO / "config" / "config.yaml"]
    )  # its models: config/models.yaml, from the repo root
    assert len(loaded.models) == 8
    assert loaded.config["batch_sizes"] == [1, 2, 4, 8, 16, 32]
    assert loaded.procedure().requests == 1000
    keras = {name for name, m in loaded.models.items() if m["source"] == "keras"}
    assert keras == {"nasnet", "inception", "efficient"}


def test_defaults_are_filled_without_touching_given_values():
    config = with_defaults(tiny_config(measure={"requests": 7}))
    assert config["measure"]["requests"] == 7
    assert config["measure"]["min_requests"] == 3
    assert config["measure"]["input"]["kind"] == "auto"
    assert config["server"]["backend"] == "auto"
    assert config["strict"] is False


def test_a_config_naming_models_replaces_the_default_set_through_the_merge():
    """The default config names its models by file, so any models: of an override replaces it whole."""
    base = {"models": "config/models.yaml", "measure": {"requests": 1000, "max_seconds": 30}}
    merged = merge_configs(base, {"models": {"c": {"x": 3}}, "measure": {"requests": 5}})
    assert merged["models"] == {"c": {"x": 3}}
    assert merged["measure"] == {"requests": 5, "max_seconds": 30}
    assert merge_configs(base, {"models": "mine.tsv"})["models"] == "mine.tsv"
    # Mappings merge key by key, as Snakemake merges --configfile: two overrides naming models add up.
    assert list(merge_configs({"models": {"a": {}}}, {"models": {"b": {}}})["models"]) == ["a", "b"]


def test_settings_are_typed_complete_and_auto_is_resolved_by_model_type():
    loaded = settings.load(
        tiny_config(
            models={
                "cls": {"source": "keras", "type": "classification", "application": "X"},
                "det": {"source": "tf2_zoo", "type": "detection", "url": "http://h/x.tar.gz", "input_size": [320, 240]},
            },
            measure={"requests": 9},
            server={"backend": "embedded"},
        )
    )
    assert loaded.input_for("cls") == InputSettings(kind="random", seed=0, image_dir=None, image_size=(512, 512))
    assert loaded.input_for("det") == InputSettings(kind="images", seed=0, image_dir=None, image_size=(320, 240))
    assert loaded.procedure() == ProcedureSettings(
        requests=9, max_seconds=30, min_requests=3, warmup_requests=10, warmup_max_seconds=10, resource_interval_s=0.2
    )
    server = loaded.server()
    assert isinstance(server, ServerSettings) and server.backend == "embedded" and server.extra_flags == ()
    assert (loaded.protocol, loaded.transport, loaded.style().palette) == ("grpc", "builtin", "okabe_ito")


def test_a_block_alone_is_checked_and_completed_for_the_commands():
    assert settings.server_settings({"backend": "embedded"}).startup_timeout_s == 600
    assert settings.input_settings({"kind": "auto"}).kind == "auto"  # resolved once the model type is known
    assert settings.procedure_settings({"requests": 3}).max_seconds == 30
    with pytest.raises(ServeprofError, match=r"server\.backend"):
        settings.server_settings({"backend": "kubernetes"})
    with pytest.raises(ServeprofError, match=r"measure\.requests"):
        settings.procedure_settings({"requests": 0})
    with pytest.raises(ServeprofError, match="unknown key"):
        settings.input_settings({"sead": 1})


def test_config_hash_changes_with_what_shapes_the_numbers_only():
    config = with_defaults(tiny_config())
    before = settings.Settings(config).model_hash("m")
    config["plots"]["dpi"] = 300
    assert settings.Settings(config).model_hash("m") == before
    config["measure"]["requests"] = 10
    assert settings.Settings(config).model_hash("m") != before


def test_check_config_cli_explains(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_config(batch_sizes=[0])))
    result = subprocess.run(
        [sys.executable, "-m", "serveprof", "check-config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "batch_sizes[0]" in result.stderr and "fix:" in result.stderr


def test_unparsable_yaml_names_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ServeprofError, match="broken.yaml is not valid YAML"):
        read_config_file(bad)


def run_snakemake(workdir: Path, config: dict, *flags: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            "--cores",
            "1",
            *flags,
            "workload/profiling/all",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


ZOO = {"source": "tf2_zoo", "type": "detection"}


@pytest.mark.parametrize(
    "change, key, fix",
    [
        ({"batch_sizes": [0]}, "batch_sizes[0]", "whole numbers of 1 or more"),
        ({"measure": {"max_seconds": -1}}, "measure.max_seconds", "positive number of seconds"),
        ({"bogus": 1}, "bogus", "known top-level keys"),
        ({"batch_sizes": [1, 2.0]}, "batch_sizes[1]", "write 2, not 2.0"),
        ({"models": {"m": {**ZOO, "url": "http://h/x.tar.gz?token=1"}}}, "models.m.url", "ending in its file name"),
        (
            {"models": {"m": {**ZOO, "url": "http://h/a/x.tar.gz"}, "n": {**ZOO, "url": "http://h/b/x.tar.gz"}}},
            "data/model/download/x.tar.gz",
            "remove one of the two models",
        ),
        (
            {"models": {"m": {"source": "keras", "type": "classification", "application": "X", "sha256": None}}},
            "models.m.sha256: a keras model does not take sha256",
            "remove sha256",
        ),
        (
            {"models": {"m": {"source": "saved_model", "type": "classification", "path": "not_there"}}},
            "models.m.path: SavedModel path not_there",
            "set the model's path to a SavedModel directory",
        ),
        (
            {"server": {"backend": "tfserving", "tfserving_path": "/nonexistent/tensorflow_model_server"}},
            "server.tfserving_path",
            "server.backend to auto",
        ),
    ],
)
def test_snakemake_refuses_bad_config_before_any_job(tmp_path, change, key, fix):
    result = run_snakemake(tmp_path, tiny_config(**change))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in output and "fix:" in output and fix in output, output
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()


def test_snakemake_reads_paths_in_the_config_from_the_workflow_directory(tmp_path):
    """A relative SavedModel path is checked where the jobs will look for it: the --directory."""
    (tmp_path / "mine" / "1").mkdir(parents=True)
    (tmp_path / "mine" / "1" / "saved_model.pb").write_bytes(b"pb")
    config = tiny_config(models={"m": {"source": "saved_model", "type": "classification", "path": "mine"}})
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acquire_model" in result.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()

"""`models:` may name a file: a YAML mapping or a TSV/CSV sheet, read and checked like inline models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from serveprof import settings
from serveprof.errors import ServeprofError
from serveprof.model_sheet import read_models

REPO = Path(__file__).resolve().parents[1]
INLINE = {
    "mine": {
        "source": "keras",
        "type": "classification",
        "application": "MobileNetV2",
        "input_size": [96, 96],
        "batch_sizes": [1, 4],
    },
    "zoo": {"source": "tf2_zoo", "type": "detection", "url": "http://h/zoo.tar.gz"},
}
TSV = (
    "model\tsource\ttype\tapplication\turl\tinput_size\tbatch_sizes\n"
    "mine\tkeras\tclassification\tMobileNetV2\t\t96x96\t1 4\n"
    "zoo\ttf2_zoo\tdetection\t\thttp://h/zoo.tar.gz\t\t\n"
)


def test_a_yaml_file_and_a_sheet_give_the_same_models_as_inline(tmp_path):
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(INLINE))
    (tmp_path / "models.tsv").write_text(TSV)
    (tmp_path / "models.csv").write_text(TSV.replace("\t", ",").replace("1 4", '"1, 4"'))
    for name in ("models.yaml", "models.tsv", "models.csv"):
        assert read_models(tmp_path / name) == INLINE, name


def test_a_config_naming_a_sheet_is_read_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "models.tsv").write_text(TSV)
    monkeypatch.chdir(tmp_path)
    loaded = settings.load({"models": "models.tsv", "batch_sizes": [2]})
    assert list(loaded.models) == ["mine", "zoo"]
    assert loaded.batch_sizes("mine") == [1, 4] and loaded.batch_sizes("zoo") == [2]


def test_sheet_values_are_checked_like_inline_ones(tmp_path, monkeypatch):
    (tmp_path / "models.tsv").write_text(
        TSV.replace("96x96", "96xlarge").replace("keras\tclassification", "keras\tsorting")
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ServeprofError) as caught:
        settings.load({"models": "models.tsv", "batch_sizes": [1]})
    message = str(caught.value)
    assert "models.mine.type" in message and "classification or detection" in message
    assert "models.mine.input_size[1]" in message


@pytest.mark.parametrize(
    "name, text, problem, fix",
    [
        ("m.tsv", "source\ttype\nkeras\tclassification\n", "has no 'model' column", "header row"),
        ("m.tsv", "model\tsource\nx\tkeras\nx\ttf2_zoo\n", "line 3: model 'x' is defined twice", "one row per model"),
        ("m.tsv", "model\tsource\n\tkeras\n", "line 2: no model key", "'model' cell"),
        ("m.csv", "model,source\nx,keras,extra\n", "line 2: more cells than header columns", "quote a cell"),
        ("m.json", "{}", "neither YAML nor a TSV/CSV sheet", ".tsv/.csv"),
        ("m.yaml", "- a\n- b\n", "holds a list, not a mapping", "<model key>:"),
    ],
)
def test_a_malformed_models_file_is_refused_with_the_fix(tmp_path, name, text, problem, fix):
    (tmp_path / name).write_text(text)
    with pytest.raises(ServeprofError) as caught:
        read_models(tmp_path / name)
    assert problem in caught.value.problem and fix in caught.value.fix


def test_a_missing_models_file_names_where_it_was_looked_for(tmp_path):
    with pytest.raises(ServeprofError, match="does not exist") as caught:
        read_models(tmp_path / "nowhere.tsv")
    assert "workflow directory" in caught.value.fix


@pytest.mark.parametrize("test_config", sorted(path.name for path in (REPO / ".test").glob("*.yaml")))
def test_each_test_config_stands_alone(test_config, monkeypatch):
    """Over config/config.yaml (as `--configfile` puts it) or on its own, a .test config gives the same settings."""
    monkeypatch.chdir(REPO)
    alone = settings.load_files([REPO / ".test" / test_config])
    over_default = settings.load_files([REPO / "config" / "config.yaml", REPO / ".test" / test_config])
    assert over_default == alone
    assert set(alone.models) == {"tiny_keras", "tiny_zoo"}


def test_the_reference_models_file_is_the_default_set():
    models = yaml.safe_load((REPO / "config" / "models.yaml").read_text())
    assert yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"] == "config/models.yaml"
    assert len(models) == 8 and os.path.exists(REPO / "config" / "models.yaml")

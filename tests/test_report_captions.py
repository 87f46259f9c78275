"""The Snakemake report captions render: valid Jinja2 against the real config, valid RST."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from docutils.core import publish_parts

from serveprof.report.figures import OVERVIEW_KINDS, PER_MODEL_KINDS
from serveprof.settings import load_files

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = sorted((REPO / "report").glob("*.rst"))


def render(path: Path, figure: str = "latency") -> str:
    config = load_files([REPO / "config" / "config.yaml"]).config
    snakemake = SimpleNamespace(
        config=config,
        wildcards=SimpleNamespace(model="nasnet", figure=figure, variant="fp16", batch="8"),
        params=SimpleNamespace(),
    )
    text = (
        jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(path.read_text()).render(snakemake=snakemake)
    )
    # halt_level 2: any RST warning (bad markup) fails the test instead of rendering silently.
    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]


@pytest.mark.parametrize("path", CAPTIONS, ids=lambda path: path.name)
def test_caption_renders(path):
    html = render(path)
    assert len(html) > 200 and "{{" not in html and "{%" not in html


def test_every_overview_figure_has_its_own_caption():
    captions = {kind: render(REPO / "report" / "overview.rst", figure=kind) for kind in OVERVIEW_KINDS}
    assert all(len(html) > 200 for html in captions.values()), captions
    assert len(set(captions.values())) == len(OVERVIEW_KINDS)
    assert "Cold start" in captions["coldstart"] and "Throughput" in captions["throughput"]


def test_every_figure_kind_and_every_caption_the_rules_name_exists():
    names = {path.stem for path in CAPTIONS}
    assert {"overview"} | set(PER_MODEL_KINDS) <= names
    for rules in (REPO / "rules").glob("*.smk"):
        for caption in re.findall(r'caption="\.\./report/([^"{}]+)\.rst"', rules.read_text()):
            assert caption in names, f"{rules.name} names report/{caption}.rst, which does not exist"


def test_distribution_caption_names_the_model_and_latency_caption_follows_the_axes():
    assert "nasnet" in render(REPO / "report" / "distribution.rst")
    assert "log (base 2)" in render(
        REPO / "report" / "overview.rst", figure="latency"
    )  # config/config.yaml: log_x true

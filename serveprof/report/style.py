"""Figure style: the config's ``plots:`` block as a Style, and the model -> colour map.

serveprof.settings builds the Style from the block (checked, defaults filled), so the
workflow's figures and ``serveprof plot --style`` can never disagree.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# Colour-blind-safe qualitative palettes. Okabe-Ito is ordered so that neighbours
# differ in hue (blue apart from sky blue). Its yellow (#F0E442, contrast 1.3:1 on
# white) is replaced by Paul Tol's wine (#882255, 8.7:1): a darker yellow would
# collide with the orange under protanopia and deuteranopia (CIEDE2000 distance 1.3
# to 5 in a Machado et al. 2009 simulation), whereas wine stays at least 20 away from
# the seven other colours for normal, protan, deutan and tritan vision.
PALETTES: dict[str, tuple[str, ...]] = {
    "okabe_ito": ("#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#000000", "#882255"),
    # Paul Tol's "bright" and "muted" schemes (personal.sron.nl/~pault).
    "tol_bright": ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB"),
    "tol_muted": ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"),
    # matplotlib's default cycle: not designed for colour blindness, offered for familiarity.
    "tab10": (
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ),
}

# A second cue besides colour, so lines stay apart in greyscale and for any eye.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")


@dataclass(frozen=True)
class Style:
    formats: tuple[str, ...]
    dpi: int
    palette: str
    log_x: bool  # batch-size axes
    log_y: bool  # latency and throughput axes (the latency axis of the distribution too)
    width_in: float
    height_in: float
    font_size: float

    @property
    def colours(self) -> tuple[str, ...]:
        return PALETTES[self.palette]


@dataclass(frozen=True)
class ModelLook:
    colour: str
    marker: str
    linestyle: str
    label: str  # the name shown in legends and on bars (see display_names)


# The TF2 Detection Zoo's training-setup suffix: every zoo model ends in it, so it
# tells the models apart no more than it tells the reader anything.
ZOO_SUFFIX = re.compile(r"_coco\d*(?:_tpu-\d+)?$")
LABEL_MAX = 40  # characters; longer names keep their start and end around an ellipsis


def display_names(models: Iterable[str]) -> dict[str, str]:
    """A short name per model for figures: the key without its zoo suffix, at most LABEL_MAX long.

    ``faster_rcnn_inception_resnet_v2_640x640_coco17_tpu-8`` is shown as
    ``faster_rcnn_inception_resnet_v2_640x640``; short keys are shown unchanged. A name
    that two models would share, or that is another model's key, falls back to the
    full key, so every label names exactly one model.
    """
    models = list(dict.fromkeys(models))
    names = {}
    for model in models:
        name = ZOO_SUFFIX.sub("", model) or model
        if len(name) > LABEL_MAX:
            name = name[: LABEL_MAX - 14] + "…" + name[-13:]
        names[model] = name
    counts = Counter(names.values())
    keys = set(models)
    return {
        model: name if counts[name] == 1 and (name == model or name not in keys) else model
        for model, name in names.items()
    }


def model_looks(all_models: Iterable[str], style: Style) -> dict[str, ModelLook]:
    """Each model's colour, marker, line style and label, from its rank among ALL configured models.

    Ranking the whole configured set (not the models on one figure) keeps a model's
    colour the same in every figure and in every report of the same config. Past the
    palette's length the colours repeat with the next line style, so models stay apart.
    """
    colours = style.colours
    ranked = sorted(set(all_models))
    labels = display_names(ranked)
    looks = {}
    for rank, model in enumerate(ranked):
        looks[model] = ModelLook(
            colour=colours[rank % len(colours)],
            marker=MARKERS[rank % len(MARKERS)],
            linestyle=LINESTYLES[(rank // len(colours)) % len(LINESTYLES)],
            label=labels[model],
        )
    return looks

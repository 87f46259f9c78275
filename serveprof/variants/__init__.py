"""Model variants: the same model in another precision or graph format, served and measured like fp32.

``catalog.py`` names the variants and what serving each needs; the exporters build one
from the fp32 SavedModel (``graph.py`` freezes, ``precision.py`` lowers to fp16/bf16,
``tflite.py`` quantizes to int8, ``xla.py`` and ``tftrt.py`` recompile); ``export.py``
runs one and writes its status; ``accuracy.py`` compares a variant's answers with
fp32's; ``report.py`` writes the variants tables and figure from result files.
docs/variants.md describes them all.
"""

"""Model acquisition (download, staging, weights) and export as batchable SavedModels.

``serveprof acquire`` finds out whether a model can be obtained and records it in
``data/model/acquired/<model>.json``; ``serveprof export`` turns what was acquired into
``data/model/inference/<model>/1/`` with a ``serving_default`` signature that takes a
batch. See docs/models.md.
"""

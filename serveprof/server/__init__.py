"""The embedded TF-Serving-compatible model server behind ``serveprof serve``.

It speaks TF Serving's gRPC (PredictionService, ModelService) and REST (/v1/models/...)
APIs for one SavedModel, so any client written for ``tensorflow_model_server`` works
against it unchanged. ``main.main(argv)`` is the entry point; docs/server.md describes
what is supported and how it differs from TF Serving.
"""

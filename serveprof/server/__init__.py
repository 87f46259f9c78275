"""The embedded TF-Serving-compatible model server behind ``serveprof serve``.

TF Serving's engine (TensorFlow's Session-based SavedModel loader, Session runs on the
SignatureDef's tensor names) behind TF Serving's gRPC (PredictionService, ModelService)
and REST (/v1/models/...) APIs for one SavedModel, with its batching, warm-up and
metrics, so any client written for ``tensorflow_model_server`` works against it
unchanged and gets the same answers. ``main.main(argv)`` is the entry point;
docs/server.md describes what is supported and how it differs from TF Serving.
"""

"""Where the time goes: per-op, per-layer and per-block times of a served model, from its own engine.

``trace.py`` runs the model as the embedded server runs it (the SavedModel in a Session,
requests as Session callables) with TensorFlow's full tracing on every other run, and
collects each node's time from the run metadata's step stats; ``layers.py`` maps node
names to Keras layers and blocks by name scope and counts each layer's parameters from
the SavedModel's variables; ``breakdown.py`` turns the per-iteration times into the
tables (mean, std, share), ``figure.py`` draws them, and ``run.py`` does one profile
end to end. docs/variants.md describes it.
"""

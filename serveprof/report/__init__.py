"""Tables, the markdown report and figures, built from a run's result files only.

Nothing here measures or imports TensorFlow: regenerating a report or a figure is a
read of ``workload/profiling`` and nothing more.
"""

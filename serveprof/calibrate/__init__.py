"""Calibration: profiled results fitted to on-device measurements, to predict models not measured there."""

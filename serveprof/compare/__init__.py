"""Runs compared: result trees read series by series, changes judged against noise, runs kept by name."""

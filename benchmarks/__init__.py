"""Reproducible benchmarks: `python benchmarks/run.py NAME [--json]`."""

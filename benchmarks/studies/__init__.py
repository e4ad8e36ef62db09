"""Finished studies whose findings set a default (docs/experiments/): ``python -m benchmarks.studies.NAME``."""

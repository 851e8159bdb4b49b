"""Evaluation of a bundle on data with ground truth (``robis-edge evaluate``) and speed
measurement (``robis-edge bench``). Metrics: metrics.py; dataset layouts: datasets.py; driver:
evaluate.py; HTML report: report.py (needs the ``report`` extra); commands: cli.py.

Importing this package imports nothing heavy; import the submodules you need."""

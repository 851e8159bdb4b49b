"""Evaluation of a bundle on data with ground truth (``robis-edge evaluate``) and speed
measurement (``robis-edge bench``). Metrics: metrics.py; dataset layouts: datasets.py; driver:
evaluate.py, with its configuration (config.py), bundle matching (bundle_specs.py), reading
(reading.py), background threads (threads.py), per-product accumulation (product_run.py), gallery
(gallery.py), summary and table (summary.py) and histograms.npz (histograms.py); HTML report:
report.py (needs the ``report`` extra); speed: bench.py; commands: cli.py.

Importing this package imports nothing heavy; import the submodules you need."""

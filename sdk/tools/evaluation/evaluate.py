"""``robis-edge evaluate``: run a bundle over a dataset split with the real pipeline (``Inspector``,
the code path of ``inspect`` and ``serve``) and compute the metrics per product and overall.

Streaming: images are read one ahead in a reader thread, inspected in the calling thread, and
their metrics accumulated in a third thread (threads.py), so the metric work overlaps the
inference. No full-resolution map is kept: each image leaves only histogram counts (metrics.py),
a line in ``per_image.jsonl`` and, for the report, at most ``gallery`` small thumbnails per kind
(gallery.py). The ``batch`` scope is the exception that RoBiS' offline semantics impose: its
statistics need every map of the split, so the Inspector holds all raw tile maps and merged maps
(at map scale) of one product at once; images are still read lazily.

Outputs under ``--out``: ``metrics.json`` (summary.py), ``per_image.jsonl`` (product_run.py),
``histograms.npz`` (histograms.py: the accumulated score histograms, enough to recompute every
curve), with ``--save-maps`` ``maps/<product>/<name>.tiff`` (float32 map at map scale) and
``masks/<product>/<name>.png`` (0/255 at mask scale), with ``--report`` ``report.html``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sdk.errors import InputError, RobisError
from sdk.imageio import read_image
from sdk.timing import progress_bar

from .bundle_specs import BundleSpec, bundle_for
from .config import EvalConfig
from .datasets import Product, load_dataset, read_ground_truth
from .histograms import write_histograms
from .product_run import ProductRun
from .reading import LazyImages, read_sample
from .summary import summarize
from .threads import Worker, prefetch

if TYPE_CHECKING:
    from sdk.inspector import Inspector


def evaluate(dataset: str | Path, bundles: list[BundleSpec] | str | Path, out: str | Path, *,
             layout: str = "auto", split: str | None = None, products: list[str] | None = None,
             max_images: int | None = None, config: EvalConfig | None = None) -> dict:
    """Evaluate and write the outputs; returns the summary written to metrics.json (with the
    ``ProductRun`` objects under the key ``"_runs"``, not written)."""
    from sdk.bundle import Bundle
    from sdk.inspector import Inspector

    cfg = config or EvalConfig()
    cfg.validate()
    if isinstance(bundles, (str, Path)):
        bundles = [(None, Path(bundles))]
    if not bundles:
        raise InputError("no bundle given")
    out = Path(out)
    t_start = time.perf_counter()
    prods = load_dataset(dataset, layout, split, products, max_images)
    loaded = {path: Bundle.load(path) for _, path in bundles}
    names = {path: b.name for path, b in loaded.items()}
    out.mkdir(parents=True, exist_ok=True)
    inspectors: dict[Path, Inspector] = {}
    runs: list[ProductRun] = []
    with open(out / "per_image.jsonl", "w", encoding="utf-8") as log:
        for prod in prods:
            path = bundle_for(prod, bundles, names)
            if cfg.scope == "calibrated":
                insp = inspectors.get(path)
                if insp is None:
                    insp = inspectors[path] = Inspector(loaded[path], backend=cfg.backend, scope="calibrated",
                                                        threads=cfg.threads, refine=cfg.refine,
                                                        streams=cfg.streams)
            else:  # rolling state starts empty for each product; batch needs no calibration
                insp = Inspector(loaded[path], backend=cfg.backend, scope="rolling", threads=cfg.threads,
                                 refine=cfg.refine, streams=cfg.streams)
            info = {**insp.describe(), "path": str(path), "scope": cfg.scope}
            info.pop("scope_reason", None)
            if cfg.progress:
                _announce(prod, info, cfg.scope)
            run = ProductRun(prod, info, cfg, out, log)
            t0 = time.perf_counter()
            if cfg.scope == "batch":
                _run_batch(run, insp)
            else:
                _run_stream(run, insp)
            run.timings["wall"] = time.perf_counter() - t0
            runs.append(run)
    summary = summarize(runs, dataset, prods, cfg, max_images)
    write_histograms(out / "histograms.npz", runs)
    summary["timings_s"]["wall"] = round(time.perf_counter() - t_start, 3)
    if cfg.report:
        from .report import write_report

        t0 = time.perf_counter()
        write_report(out / "report.html", summary, runs)
        summary["timings_s"]["report"] = round(time.perf_counter() - t0, 3)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["_runs"] = runs
    return summary


def _announce(prod: Product, info: dict, scope: str) -> None:
    groups = ", ".join(f"{g} {n}" for g, n in prod.groups.items())
    split_name = prod.split or "(whole folder)"
    print(f"{prod.name} ({prod.layout}, split {split_name}: {groups}): bundle {info['bundle']}"
          f" on {info['backend']}/{info['provider']} {info['precision']} "
          f"({info['reason']}), scope {scope}", file=sys.stderr)


def _run_stream(run: ProductRun, insp: Inspector) -> None:
    worker = Worker()
    prod = run.product
    try:
        samples = progress_bar(prefetch(read_sample, prod.samples), len(prod.samples), run.cfg.progress,
                               desc=prod.name, unit="image")
        for sample, image, color, gt, err, t_read in samples:
            run.timings["read"] += t_read
            if err is not None:
                worker.submit(run.error, sample, err)
                continue
            t0 = time.perf_counter()
            try:
                result = insp.inspect(image, color)
            except RobisError as exc:
                worker.submit(run.error, sample, exc)
                continue
            finally:
                run.timings["inspect"] += time.perf_counter() - t0
            worker.submit(run.add, sample, gt, result, image, color, None)
    finally:
        worker.join()


def _run_batch(run: ProductRun, insp: Inspector) -> None:
    prod = run.product
    images = LazyImages(prod.samples)
    t0 = time.perf_counter()
    results = insp.inspect_batch(images, None, scope="batch", progress=run.cfg.progress)
    run.timings["inspect"] += time.perf_counter() - t0 - images.read_s
    run.timings["read"] += images.read_s
    worker = Worker()
    try:
        for sample, result in zip(prod.samples, results):
            t1 = time.perf_counter()
            gt = read_ground_truth(sample, result.frame_hw)
            run.timings["read"] += time.perf_counter() - t1
            worker.submit(run.add, sample, gt, result, None, None, lambda s=sample: read_image(s.image))
    finally:
        worker.join()

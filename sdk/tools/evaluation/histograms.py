"""``histograms.npz``: the accumulated score histograms and counts of every product, enough to
recompute every curve and metric of an evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .product_run import ProductRun


def write_histograms(path: Path, runs: list[ProductRun]) -> None:
    """Write the arrays of each product as ``<product>__<what>``."""
    arrays = {}
    for r in runs:
        p = r.product.name
        arrays[f"{p}__all"] = r.pixels.hist_all
        arrays[f"{p}__defect"] = r.pixels.hist_defect
        arrays[f"{p}__pro"] = r.pixels.hist_pro
        arrays[f"{p}__counts"] = np.array([r.pixels.images, r.pixels.regions, r.pixels.pixels,
                                           r.pixels.defect_pixels, r.pixels.tp, r.pixels.fp, r.pixels.fn])
        arrays[f"{p}__image_scores"] = np.asarray(r.images.scores)
        arrays[f"{p}__image_labels"] = np.asarray(r.images.labels)
        arrays[f"{p}__image_fails"] = np.asarray(r.images.fails)
    np.savez_compressed(path, **arrays)

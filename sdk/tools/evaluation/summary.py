"""The summary of an evaluation (the content of metrics.json: per product, the unweighted mean over
products, conventions, timings, host) and its metric table as text."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from .config import METRIC_NAMES, EvalConfig
from .datasets import Product
from .product_run import ProductRun

CONVENTIONS = {
    "resolution": "ground truth's; map resized bilinear (cv2.INTER_LINEAR), mask nearest (cv2.INTER_NEAREST)",
    "ground_truth": "mask value > 127 is a defect; regions 8-connected",
    "scores": "float16-rounded, one threshold per distinct value",
    "seg_f1": "TP/FP/FN summed over all pixels of all images of the split",
    "overall": "unweighted mean over products of each metric; counts summed"}


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _overall_metrics(per: dict[str, dict], fpr_limit: float) -> dict:
    overall: dict = {}
    for m in METRIC_NAMES:
        vals = [p["metrics"][m]["value"] for p in per.values()]
        overall[m] = {"value": _mean(vals), "products": sum(v is not None for v in vals),
                      "images": sum(p["metrics"][m]["images"] for p in per.values()),
                      "defective_images": sum(p["metrics"][m]["defective_images"] for p in per.values())}
        if "regions" in next(iter(per.values()))["metrics"][m]:
            overall[m]["regions"] = sum(p["metrics"][m]["regions"] for p in per.values())
    overall["au_pro"]["fpr_limit"] = fpr_limit
    return overall


def summarize(runs: list[ProductRun], dataset: str | Path, prods: list[Product], cfg: EvalConfig,
              max_images: int | None) -> dict:
    """metrics.json's content (without the total wall time, which the driver adds)."""
    per = {r.product.name: r.result() for r in runs}
    timings = {k: round(sum(r.timings[k] for r in runs), 3) for k in runs[0].timings}
    n_img = sum(r.pixels.images for r in runs)
    timings["metrics_per_image_ms"] = round(1000 * timings["metrics"] / max(n_img, 1), 3)
    timings["inspect_per_image_ms"] = round(1000 * timings["inspect"] / max(n_img, 1), 3)
    return {
        "dataset": str(dataset), "layout": prods[0].layout, "split": prods[0].split, "scope": cfg.scope,
        "fpr_limit": cfg.fpr_limit, "max_images": max_images,
        "conventions": dict(CONVENTIONS),
        "products": per,
        "overall": {"products": len(per), "images": n_img, "errors": sum(len(r.errors) for r in runs),
                    "metrics": _overall_metrics(per, cfg.fpr_limit)},
        "timings_s": timings,
        "host": {"node": platform.node(), "platform": platform.platform(),
                 "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_table(summary: dict) -> str:
    """The metric table as text (products, then the mean)."""
    lim = summary["fpr_limit"]
    cols = [("seg_f1", "SegF1"), ("au_pro", f"AucPro@{lim:g}"), ("class_f1", "ClassF1"),
            ("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_f1_max", "P-F1max")]
    width = max(12, *(len(n) + 2 for n in summary["products"]))
    head = f"{'product':<{width}}{'images':>7}{'defect':>7}{'regions':>8}"
    head += "".join(f"{c:>{max(9, len(c) + 2)}}" for _, c in cols)
    lines = [head]

    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    for name, p in summary["products"].items():
        lines.append(f"{name:<{width}}{p['images']:>7}{p['defective_images']:>7}{p['gt_regions']:>8}"
                     + "".join(f"{fmt(p['metrics'][k]['value']):>{max(9, len(c) + 2)}}" for k, c in cols))
    if len(summary["products"]) > 1:
        o = summary["overall"]
        m = o["metrics"]
        lines.append(f"{'mean':<{width}}{o['images']:>7}{m['seg_f1']['defective_images']:>7}"
                     f"{m['au_pro']['regions']:>8}"
                     + "".join(f"{fmt(m[k]['value']):>{max(9, len(c) + 2)}}" for k, c in cols))
    return "\n".join(lines)

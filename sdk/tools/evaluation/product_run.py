"""``ProductRun``: what the evaluation of one product accumulates, image by image: metrics, the
lines of ``per_image.jsonl``, saved maps and masks, the gallery and the timings."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from sdk.echo import FileErrorEcho
from sdk.imageio import write_mask

from .config import METRIC_NAMES, EvalConfig
from .datasets import Product, Sample
from .gallery import Gallery, GalleryItem
from .metrics import ImageMetrics, PixelMetrics

if TYPE_CHECKING:
    from sdk.inspector import Result


class ProductRun:
    """Accumulated state of one product: metrics, per-image records, gallery, timings."""

    def __init__(self, product: Product, bundle_info: dict, cfg: EvalConfig, out: Path, log: TextIO) -> None:
        self.product = product
        self.bundle_info = bundle_info
        self.cfg = cfg
        self.out = out
        self.log = log
        self.pixels = PixelMetrics()
        self.images = ImageMetrics()
        self.errors: list[dict] = []
        self.echo = FileErrorEcho("evaluate", str(out / "per_image.jsonl"))
        self.timings = {"read": 0.0, "inspect": 0.0, "metrics": 0.0, "gallery": 0.0, "save": 0.0, "wall": 0.0}
        self.gallery = Gallery(cfg.gallery)

    # runs in the metrics thread, one image at a time, in dataset order
    def add(self, sample: Sample, gt: np.ndarray, result: Result, image: np.ndarray | None,
            color: str | None, load_image: Callable[[], tuple[np.ndarray, str]] | None) -> None:
        """Accumulate one inspected image (``load_image`` reads it for the gallery when ``image``
        is None)."""
        t0 = time.perf_counter()
        st = self.pixels.add(gt, result.anomaly_map, result.mask)
        defective = st.gt_pixels > 0
        self.images.add(defective, result.score, result.verdict == "fail")
        self.timings["metrics"] += time.perf_counter() - t0
        rec = {"product": self.product.name, "name": sample.name, "group": sample.group,
               "image": str(sample.image), "ground_truth": None if sample.mask is None else str(sample.mask),
               "defective": defective, "verdict": result.verdict,
               "score": round(float(result.score), 4), "pred_regions": len(result.regions),
               **st.to_json(), "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
        self.log.write(json.dumps(rec) + "\n")
        if self.cfg.save_maps:
            t1 = time.perf_counter()
            self._save_maps(sample, result)
            self.timings["save"] += time.perf_counter() - t1
        if self.cfg.report and self.cfg.gallery > 0:
            t1 = time.perf_counter()
            self.gallery.offer(sample, gt, result, st, image, color, load_image)
            self.timings["gallery"] += time.perf_counter() - t1

    def _save_maps(self, sample: Sample, result: Result) -> None:
        import tifffile

        p = self.out / "maps" / self.product.name / f"{sample.name}.tiff"
        p.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(p, np.asarray(result.anomaly_map, np.float32))
        write_mask(self.out / "masks" / self.product.name / f"{sample.name}.png", result.mask)

    def error(self, sample: Sample, exc: Exception) -> None:
        """Record an image that could not be read or inspected."""
        rec = {"product": self.product.name, "name": sample.name, "image": str(sample.image),
               "verdict": "error", "error": str(exc)}
        self.errors.append(rec)
        self.echo(f"{self.product.name}/{sample.name}", exc)
        self.log.write(json.dumps(rec) + "\n")

    def worst(self, kind: str) -> list[GalleryItem]:
        """The gallery's pictures of one kind ("fn" or "fp"), worst first."""
        return self.gallery.worst(kind)

    def result(self) -> dict:
        """This product's entry of metrics.json."""
        metrics = {**self.pixels.result(self.cfg.fpr_limit), **self.images.result()}
        return {"bundle": self.bundle_info, "root": str(self.product.root), "split": self.product.split,
                "images": self.pixels.images, "defective_images": self.pixels.defective_images,
                "gt_regions": self.pixels.regions, "groups": self.product.groups, "errors": len(self.errors),
                "metrics": {k: metrics[k] for k in METRIC_NAMES},
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}

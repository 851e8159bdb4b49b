"""Regions of the final mask, in full-frame pixels, and the pass/fail decision."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .bundle import VerdictSpec


@dataclass(frozen=True)
class Region:
    """One 8-connected region of the final mask. ``bbox`` is x0, y0, x1, y1 (exclusive) in frame
    pixels; ``area_px`` its area in frame pixels; ``max``/``mean`` the anomaly map over it."""

    bbox: tuple[int, int, int, int]
    area_px: int
    max: float
    mean: float

    def to_json(self) -> dict:
        d = asdict(self)
        d["bbox"] = list(self.bbox)
        return d


def roi_slices(roi: tuple[int, int, int, int] | None, scale: float,
               shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows/columns of a map at ``scale`` covered by a frame-pixel ROI (whole map if None)."""
    if roi is None:
        return slice(0, shape[0]), slice(0, shape[1])
    x0, y0, x1, y1 = roi
    return (slice(max(0, math.floor(y0 * scale)), min(shape[0], math.ceil(y1 * scale))),
            slice(max(0, math.floor(x0 * scale)), min(shape[1], math.ceil(x1 * scale))))


def find_regions(mask: np.ndarray, amap: np.ndarray, scale: float,
                 frame_hw: tuple[int, int]) -> list[Region]:
    """Connected regions (8-connectivity) of ``mask`` (same grid as ``amap``, at ``scale``)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).view(np.uint8), connectivity=8)
    if n <= 1:
        return []
    lab = labels.reshape(-1)
    fg = lab > 0
    lab, val = lab[fg], amap.reshape(-1)[fg].astype(np.float64)
    sums = np.bincount(lab, weights=val, minlength=n)
    order = np.lexsort((val, lab))
    last = np.r_[np.flatnonzero(np.diff(lab[order])), lab.size - 1]
    maxima = np.zeros(n)
    maxima[lab[order][last]] = val[order][last]
    fh, fw = frame_hw
    regions = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        bbox = (min(fw - 1, math.floor(x / scale)), min(fh - 1, math.floor(y / scale)),
                min(fw, math.ceil((x + w) / scale)), min(fh, math.ceil((y + h) / scale)))
        # mask pixels / scale² (RoBiS), never more than the frame itself (frames barely a map pixel wide)
        regions.append(Region(bbox, min(fh * fw, int(round(area / (scale * scale)))), float(maxima[i]),
                              float(sums[i] / area)))
    regions.sort(key=lambda r: r.area_px, reverse=True)
    return regions


def decide(regions: list[Region], score: float, spec: VerdictSpec) -> tuple[str, str]:
    """``("fail", why)`` when a region reaches ``min_area_px`` or the score its threshold."""
    big = [r for r in regions if r.area_px >= spec.min_area_px]
    if big:
        return "fail", f"{len(big)} region(s) of at least {spec.min_area_px} px"
    if spec.score_threshold is not None and score >= spec.score_threshold:
        return "fail", f"image score {score:.2f} >= {spec.score_threshold}"
    score_words = "no score threshold" if spec.score_threshold is None else \
        f"score {score:.2f} below {spec.score_threshold}"
    if regions:
        return "pass", (f"{len(regions)} region(s) smaller than min_area_px {spec.min_area_px} (largest "
                        f"{regions[0].area_px} px); {score_words}")
    return "pass", f"no region; {score_words}"

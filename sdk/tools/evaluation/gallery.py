"""The report's gallery: per product the worst false negatives and false positives, kept while the
images stream by as small overlay thumbnails (JPEG), at most ``size`` per kind."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .datasets import Sample
from .metrics import ImagePixelStats

if TYPE_CHECKING:
    from sdk.inspector import Result

THUMB_SIDE = 640
KINDS = ("fn", "fp")


@dataclass(order=True)
class GalleryItem:
    """One picture of the report's gallery; ordered by how bad the error is."""

    rank: tuple
    seq: int
    kind: str = field(compare=False)  # "fn" | "fp"
    name: str = field(compare=False)
    caption: dict = field(compare=False)
    jpeg: bytes = field(compare=False, repr=False)


class Gallery:
    """The ``size`` worst pictures of each kind seen so far (a min-heap per kind)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.heaps: dict[str, list[GalleryItem]] = {k: [] for k in KINDS}
        self._seq = itertools.count()

    def offer(self, sample: Sample, gt: np.ndarray, result: Result, st: ImagePixelStats,
              image: np.ndarray | None, color: str | None,
              load_image: Callable[[], tuple[np.ndarray, str]] | None) -> None:
        """Keep this image if it is among the worst of a kind; the thumbnail is drawn only then
        (reading the image with ``load_image`` when ``image`` is None)."""
        candidates = []
        if st.fn > 0:  # missed defect pixels; a defective part passed is the worst case
            candidates.append(("fn", (result.verdict == "pass", st.fn / st.gt_pixels, st.fn)))
        if st.fp > 0 or (st.gt_pixels == 0 and result.verdict == "fail"):
            candidates.append(("fp", (st.gt_pixels == 0 and result.verdict == "fail", st.fp)))
        jpeg = None
        for kind, rank in candidates:
            heap = self.heaps[kind]
            if len(heap) >= self.size and rank <= heap[0].rank:
                continue
            if jpeg is None:
                if image is None:
                    image, color = load_image()
                jpeg = thumbnail(image, color, result, gt)
            caption = {"name": sample.name, "group": sample.group, "verdict": result.verdict,
                       "score": round(float(result.score), 2), "gt_pixels": st.gt_pixels,
                       "gt_regions": st.gt_regions, "regions_hit": st.regions_hit, "tp": st.tp,
                       "fp": st.fp, "fn": st.fn, "seg_f1": st.seg_f1}
            item = GalleryItem(rank, -next(self._seq), kind, sample.name, caption, jpeg)
            if len(heap) < self.size:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def worst(self, kind: str) -> list[GalleryItem]:
        """The pictures of one kind, worst first."""
        return sorted(self.heaps[kind], reverse=True)


def thumbnail(image: np.ndarray, color: str | None, result: Result, gt: np.ndarray) -> bytes:
    """The overlay (heat map, predicted mask contours, regions, verdict) with the ground truth's
    contours in green, drawn at thumbnail size (at most THUMB_SIDE pixels), as JPEG."""
    from sdk.overlay import render_overlay
    from sdk.preprocess import frame_to_rgb8

    h, w = image.shape[:2]
    f = min(1.0, THUMB_SIDE / max(h, w))
    if f < 1.0:  # scale the frame and the region boxes, not the finished full-size overlay
        tw, th = max(1, round(w * f)), max(1, round(h * f))
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        sx, sy = tw / w, th / h
        regions = [dataclasses.replace(r, bbox=(math.floor(r.bbox[0] * sx), math.floor(r.bbox[1] * sy),
                                                math.ceil(r.bbox[2] * sx), math.ceil(r.bbox[3] * sy)))
                   for r in result.regions]
        result = dataclasses.replace(result, regions=regions)
        h, w = th, tw
    over = render_overlay(frame_to_rgb8(image, color), result)
    g = (gt > 0).view(np.uint8)
    if g.shape != (h, w):  # area-average so that thin defects survive the downscale
        g = cv2.resize(g * np.uint8(255), (w, h), interpolation=cv2.INTER_AREA) > 0
        g = g.view(np.uint8)
    contours, _ = cv2.findContours(g, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(over, contours, -1, (0, 230, 0), 1 if max(h, w) <= 400 else 2)
    ok, buf = cv2.imencode(".jpg", over, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else b""

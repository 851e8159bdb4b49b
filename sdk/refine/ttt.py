"""TTT4AS test-time refinement: a linear SVM trained per frame on pseudo-labels of its own map.

Per failing frame (docs/refine.md): the merged anomaly map S → its local maxima (a pixel at least
as high as its 8 neighbours) above the P-th percentile of S are anomalous ("easy"), with every
pixel within ``hard_radius`` of them ("hard") → nominal points on a regular grid of step
``nominal_stride`` off the anomalous ones → the patch features of those points (the model's
``features`` output, merged across tiles and bilinearly upsampled to the map as the maps are) →
a soft-margin linear SVM (hinge loss, scikit-learn's LinearSVC) → every pixel classified.

The features are never upsampled densely: the SVM's decision is affine in the features, and
merging is an average of bilinear interpolations (weights summing to one), so the per-tile
decision maps w·F + b merged like the maps equal the classification of the dense upsampled
features up to float rounding (tests/oracles.py does it the dense way).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from typing import Any

import cv2
import numpy as np

from ..bundle import TttRefineSpec
from ..errors import InputError
from ..geometry import TilingPlan
from ..timing import ms_since

TIMING_KEYS = ("ttt_labels", "ttt_fit", "ttt_predict")


def _linear_svc():
    try:
        from sklearn.svm import LinearSVC
    except ModuleNotFoundError:
        raise InputError("the ttt refiner needs scikit-learn: pip install 'robis-edge[ttt]'") from None
    return LinearSVC


def pseudo_labels(score: np.ndarray, spec: TttRefineSpec) -> tuple[np.ndarray, np.ndarray]:
    """(anomalous, nominal) pixel indices into ``score.ravel()``, both sorted; empty when the map
    gives no peak above its percentile."""
    s = np.ascontiguousarray(score, dtype=np.float32)
    threshold = np.percentile(s, spec.percentile)
    peaks = (s >= cv2.dilate(s, np.ones((3, 3), np.uint8))) & (s > threshold)
    if not peaks.any():
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    k = 2 * spec.hard_radius + 1
    anomalous = cv2.dilate(peaks.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    grid = np.zeros_like(anomalous)
    half = spec.nominal_stride // 2
    grid[half::spec.nominal_stride, half::spec.nominal_stride] = True
    return np.flatnonzero(anomalous), np.flatnonzero(grid & ~anomalous)


def fit_svm(x: np.ndarray, y: np.ndarray, spec: TttRefineSpec) -> tuple[np.ndarray, float]:
    """A LinearSVC (hinge loss) on labelled features: its weights (C,) and bias."""
    svc = _linear_svc()(C=spec.svm_c, loss="hinge", dual=True, max_iter=spec.max_iter, random_state=0,
                        class_weight="balanced" if spec.class_weight == "balanced" else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the hinge loss at max_iter is still used
        svc.fit(x, y)
    return svc.coef_[0].astype(np.float32), float(svc.intercept_[0])


class TttRefiner:
    """Refines a coarse mask with TTT4AS on the frame's own map and features (thread-safe)."""

    def __init__(self, spec: TttRefineSpec | None = None) -> None:
        self.spec = spec or TttRefineSpec()
        _linear_svc()  # fail when the Inspector is made, not on the first failing frame

    def describe(self) -> dict[str, Any]:
        return {"mode": "ttt", **asdict(self.spec)}

    def refine(self, score: np.ndarray, coarse_mask: np.ndarray, plan: TilingPlan, tile_features: np.ndarray,
               scale: float) -> tuple[np.ndarray, dict[str, float]]:
        """The refined mask (uint8 0/255, the map's shape) and timings in ms. ``score``: the merged
        raw (unclipped) map at ``scale``; ``tile_features``: (N, C, g, g) of the frame's tiles. An
        empty coarse mask, or a map without labels of both classes, returns the coarse mask
        unchanged."""
        timings = dict.fromkeys(TIMING_KEYS, 0.0)
        if score.shape != coarse_mask.shape:
            raise InputError(f"the map is {score.shape} but the coarse mask {coarse_mask.shape}")
        if not coarse_mask.any():
            return coarse_mask, timings
        t0 = time.perf_counter()
        pos, neg = pseudo_labels(score, self.spec)
        if pos.size == 0 or neg.size == 0:
            timings["ttt_labels"] = ms_since(t0)
            return coarse_mask, timings
        feats = tile_features.astype(np.float32, copy=False)
        if self.spec.normalize == "l2":
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), np.float32(1e-12))
        idx = np.concatenate([pos, neg])
        ys, xs = np.divmod(idx, score.shape[1])
        x = plan.sample(feats, ys, xs, scale)
        y = np.concatenate([np.ones(pos.size, np.int8), np.zeros(neg.size, np.int8)])
        t1 = time.perf_counter()
        timings["ttt_labels"] = (t1 - t0) * 1000.0
        w, b = fit_svm(x, y, self.spec)
        t2 = time.perf_counter()
        timings["ttt_fit"] = (t2 - t1) * 1000.0
        decision = np.tensordot(w, feats, axes=(0, 1)) + np.float32(b)
        merged = plan.merge(decision, scale)
        if merged.shape != score.shape:
            raise InputError(f"features merge to {merged.shape}, the map is {score.shape}")
        keep = (merged > 0) & (coarse_mask > 0) if self.spec.within_coarse else merged > 0
        mask = np.where(keep, np.uint8(255), np.uint8(0))
        timings["ttt_predict"] = ms_since(t2)
        return mask, timings

"""Inspector: one frame in, mask + regions + verdict out. The one pipeline code path.

frame → RGB8 → tiling plan → per-tile preprocess → batched model → normalise → merge
→ binarise (scope statistics) → morphology → ROI → regions → verdict.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .backends import Backend, create_backend
from .bundle import Bundle
from .engines.reference import DEFAULT_TILES, choose_tiles, cut_tiles
from .errors import CalibrationError, InputError
from .geometry import TilingPlan
from .postprocess.binarize import (
    Binarized,
    as_map,
    batch_statistics,
    binarize,
    binarize_batch,
    prepare_binarization,
)
from .postprocess.morphology import apply_morphology
from .postprocess.stats import BinStats, Calibration, NormStats, RollingStats
from .preprocess import prepare_frame, tile_preprocessor
from .timing import ms_since, progress_bar
from .verdict import Region, decide, find_regions, roi_slices
from .vocabulary import SCOPES

MAX_TILES = 256  # tiles of one frame (RoBiS' 2448x2048 frames: 9); more would not fit in memory


@dataclass
class Result:
    """Everything the pipeline says about one frame."""

    verdict: str  # "pass" | "fail"
    reason: str
    score: float  # max of the merged 0..255 map (inside the ROI)
    regions: list[Region]
    mask: np.ndarray  # uint8 0/255 at ``mask_scale``
    anomaly_map: np.ndarray  # float32 0..255 at ``map_scale``
    map_scale: float
    mask_scale: float
    frame_hw: tuple[int, int]
    scope: str
    thresholds: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready description (no arrays)."""
        return {"verdict": self.verdict, "reason": self.reason, "score": round(self.score, 4),
                "regions": [r.to_json() for r in self.regions], "frame_hw": list(self.frame_hw),
                "map_scale": self.map_scale, "mask_scale": self.mask_scale, "scope": self.scope,
                "thresholds": self.thresholds,
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}


@dataclass
class _Raw:
    """A frame after the model: raw tile maps and its plan."""

    plan: TilingPlan
    tiles: np.ndarray  # (N, M, M) raw scores
    timings: dict
    frame: np.ndarray | None = None  # the prepared frame (H×W gray / H×W×3 RGB uint8), for refinement
    features: np.ndarray | None = None  # (N, C, g, g) patch features, only when TTT refines


class Inspector:
    """Runs a bundle on frames. Thread-safe: ``inspect`` may be called from several threads.

    ``scope`` picks the statistics of the post-processing: ``"calibrated"`` (the bundle's frozen
    numbers) or ``"rolling"`` (the last ``rolling_window`` frames). Default: calibrated when the
    bundle is, otherwise rolling with a warning (``scope_reason`` and every Result say which).
    ``inspect_batch(..., scope="batch")`` reproduces RoBiS' offline semantics over a set of frames.
    ``backend``: a name (``sdk.backends.BACKENDS``) or a ready ``Backend`` object; with an object,
    SAM refinement runs only when ``refine=True`` is passed.
    ``refine``: ``None`` = as the bundle says (SAM when ``refine.sam`` is active, else TTT when
    ``refine.ttt.enabled``, else none); ``"none"``/``False``; ``"sam"``/``True``; ``"ttt"`` (needs
    the model's ``features`` output and scikit-learn). See docs/refine.md.
    """

    def __init__(self, bundle: Bundle | str | Path, backend: str | Backend = "auto", *,
                 scope: str | None = None, rolling_window: int = 64, mask_scale: float | None = None,
                 threads: int | None = None, max_batch: int | None = None,
                 refine: bool | str | None = None, streams: int | None = None) -> None:
        if mask_scale is not None and not (isinstance(mask_scale, (int, float)) and 0 < mask_scale <= 1):
            raise InputError(f"mask_scale must be a number in (0, 1] (1.0 = full frame), got {mask_scale!r}")
        for name, value in (("threads", threads), ("streams", streams)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.preprocess_spec = self.bundle.preprocess
        self.window, self.overlap = self.bundle.tiling
        self.map_size = self.bundle.map_size
        self.map_scale_override = self.bundle.map_scale  # read once: the frame's path reads attributes
        if isinstance(backend, str):
            self.backend = create_backend(str(self.bundle.model_path), input_size=self.preprocess_spec.size,
                                          map_size=self.map_size, backend=backend, threads=threads,
                                          max_batch=max_batch, bundle=self.bundle, streams=streams)
        else:  # a Backend object made by the caller (the engine parity gate, tests)
            self.backend, backend = backend, "auto"
            refine = False if refine is None else refine
        self.binarize_config = self.bundle.binarize_config
        prepare_binarization(self.binarize_config)  # not during the first frame
        self.refine_mode = self._refine_mode(refine)
        # SAM refinement (docs/refine.md)
        from .refine import load_sam_refiner

        self.refiner = None
        if self.refine_mode == "sam":
            self.refiner = load_sam_refiner(self.bundle, backend, threads=threads,
                                            mode="single" if self._sam_off() else None)
        self.ttt = None
        if self.refine_mode == "ttt":
            from .refine.ttt import TttRefiner

            if not hasattr(self.backend, "run_with_features"):
                raise InputError(f"--refine ttt needs the model's features from ONNX Runtime; backend "
                                 f"{self.backend.name!r} does not provide them")
            self.ttt = TttRefiner(self.bundle.ttt)
        self.morphology = self.bundle.morphology
        self.verdict_spec = self.bundle.verdict
        self.mask_scale = mask_scale
        self.calibration = self.bundle.calibration
        self.scope_reason = f"scope {scope!r} requested"
        if scope is None:
            if self.calibration is not None:
                scope, self.scope_reason = "calibrated", "the bundle is calibrated"
            else:
                scope = "rolling"
                self.scope_reason = (f"bundle {self.bundle.name!r} has no calibration: using statistics of "
                                     f"the last {rolling_window} frames; run `robis-edge calibrate` to "
                                     "freeze them")
                warnings.warn(self.scope_reason, stacklevel=2)
        if scope not in ("calibrated", "rolling"):
            raise InputError(f"Inspector scope must be 'calibrated' or 'rolling' (got {scope!r}); "
                             "'batch' is a property of inspect_batch")
        if scope == "calibrated" and (self.calibration is None or self.calibration.norm is None):
            raise CalibrationError(f"scope 'calibrated' needs the bundle's calibration with amap_min/"
                                   f"amap_max; {self.bundle.name!r} has none (run `robis-edge calibrate`)")
        self.scope = scope
        self._rolling = RollingStats(rolling_window)
        self._lock = threading.Lock()
        self._plans: dict[tuple[int, int], TilingPlan] = {}

    def _sam_off(self) -> bool:
        sam = self.bundle.sam
        return sam is not None and sam.mode == "off"

    def _refine_mode(self, refine: bool | str | None) -> str:
        """'none', 'sam' or 'ttt', checked against what the bundle has."""
        from .vocabulary import REFINE_MODES

        if refine is None or refine is False:
            if refine is False:
                return "none"
            sam, ttt = self.bundle.sam, self.bundle.ttt
            if sam is not None and sam.mode != "off":
                return "sam"
            return "ttt" if ttt is not None and ttt.enabled else "none"
        mode = "sam" if refine is True else refine
        if mode not in REFINE_MODES:
            raise InputError(f"refine must be one of {', '.join(REFINE_MODES)} (got {refine!r})")
        if mode == "sam" and (self.bundle.sam is None or (refine is True and self._sam_off())):
            raise InputError(f"bundle {self.bundle.name!r} has no active refine.sam section (run "
                             "`robis-edge export sam`, or set refine.sam.mode)")
        if mode == "ttt" and self.bundle.model.features is None:
            raise InputError(f"bundle {self.bundle.name!r} has no features output for TTT (export it with "
                             "`robis-edge export inpformer --features`)")
        return mode

    # -- building blocks --------------------------------------------------------------
    def plan(self, height: int, width: int) -> TilingPlan:
        """The (cached) tiling plan of a frame size."""
        key = (height, width)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans.setdefault(key, TilingPlan(height, width, self.window, self.overlap))
        return plan

    def _infer(self, image: np.ndarray, color: str | None) -> _Raw:
        t0 = time.perf_counter()
        img = prepare_frame(image, color)  # H×W gray or H×W×3 RGB (a view when possible)
        plan = self.plan(*img.shape[:2])
        self._check_size(plan)
        batch = tile_preprocessor(self.preprocess_spec, plan.tile_hw)(plan.extract(img))
        t1 = time.perf_counter()
        if self.ttt is not None:
            tiles, feats = self.backend.run_with_features(batch)
        else:
            tiles, feats = self.backend.run(batch), None
        return _Raw(plan, tiles, {"preprocess": (t1 - t0) * 1000.0, "infer": ms_since(t1)}, img, feats)

    def _check_size(self, plan: TilingPlan) -> None:
        """A frame must cover at least one map pixel in each direction (smaller ones cannot be
        represented: their one map pixel would stand for more than the frame), and need at most
        ``MAX_TILES`` tiles (all tiles of a frame are one batch in memory)."""
        scale = self.map_scale_override or plan.map_scale(self.map_size)
        if plan.height * scale < 1 - 1e-9 or plan.width * scale < 1 - 1e-9:
            side = math.ceil(1 / scale - 1e-9)
            raise InputError(f"the frame is {plan.width}x{plan.height} pixels, smaller than bundle "
                             f"{self.bundle.name!r} can inspect: its map scale {scale:g} needs at least "
                             f"{side}x{side} pixels")
        n = len(plan.origins_y) * len(plan.origins_x)
        if n > MAX_TILES:
            raise InputError(f"the frame is {plan.width}x{plan.height} pixels: bundle {self.bundle.name!r} "
                             f"(tiling window {plan.window}, overlap {plan.overlap:g}) would cut it into {n} "
                             f"tiles, more than {MAX_TILES}; use smaller frames or a larger tiling.window")

    def _merge(self, raw: _Raw, norm: NormStats, clip: bool) -> np.ndarray:
        return raw.plan.merge(norm.normalise(raw.tiles, clip=clip), self.map_scale_override)

    def _finish(self, raw: _Raw, merged: np.ndarray, bins: BinStats | None, scope: str,
                t_merge: float, coarse: tuple[Binarized, float] | None = None) -> Result:
        """Coarse mask (given with its ms by the batch path, else computed here) → verdict."""
        timings = dict(raw.timings)
        timings["merge"] = t_merge
        t0 = time.perf_counter()
        b, t_coarse = coarse or (binarize(as_map(merged, self.binarize_config.precision), bins,
                                          self.binarize_config), 0.0)
        mask = apply_morphology(b.mask, self.morphology.closing, self.morphology.fill_holes)
        scale = self.map_scale_override or raw.plan.map_scale(self.map_size)
        rows, cols = roi_slices(self.verdict_spec.roi, scale, mask.shape)
        mask = self._apply_roi(mask, rows, cols)
        timings["binarize"] = t_coarse + ms_since(t0)
        if self.refiner is not None and raw.frame is not None:
            # RoBiS SAM_Finer: the refined mask replaces the coarse one (same shape, map scale).
            # ROI before (no box outside it) and again after (SAM can grow past it).
            color = "gray" if raw.frame.ndim == 2 else "rgb"
            refined, t_refine = self.refiner.refine(raw.frame, mask, color=color)
            timings.update(t_refine)
            mask = self._apply_roi(refined, rows, cols)
        t1 = time.perf_counter()
        frame_hw = (raw.plan.height, raw.plan.width)
        view = merged[rows, cols]
        score = float(view.max()) if view.size else 0.0
        regions = find_regions(mask, merged, scale, frame_hw)
        verdict, reason = decide(regions, score, self.verdict_spec)
        t_regions = ms_since(t1)
        if self.ttt is not None and raw.features is not None and verdict == "fail":
            # TTT4AS (docs/refine.md): a per-frame SVM on the frame's own features, trained on
            # pseudo-labels of the unclipped map; frames the coarse mask passes cost nothing.
            t_ttt = time.perf_counter()
            score_map = raw.plan.merge(raw.tiles, self.bundle.map_scale)
            refined, t_refine = self.ttt.refine(score_map, mask, raw.plan, raw.features, scale)
            timings.update(t_refine)
            mask = self._apply_roi(refined, rows, cols)
            timings["refine"] = ms_since(t_ttt)
            t2 = time.perf_counter()
            regions = find_regions(mask, merged, scale, frame_hw)
            if self.ttt.spec.verdict_from == "refined":
                verdict, reason = decide(regions, score, self.verdict_spec)
            else:
                reason = f"coarse mask: {reason} (refine.ttt.verdict_from 'coarse')"
            t_regions += ms_since(t2)
        t1 = time.perf_counter()
        out_mask, mask_scale = mask, scale
        if self.mask_scale is not None and not math.isclose(self.mask_scale, scale):
            mask_scale = float(self.mask_scale)
            size = (max(1, round(frame_hw[1] * mask_scale)), max(1, round(frame_hw[0] * mask_scale)))
            out_mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        timings["regions"] = t_regions + ms_since(t1)
        thresholds = {"mebin": b.mebin_threshold, "meanstd": b.meanstd_threshold}
        if self.binarize_config.method == "fixed":
            thresholds["fixed"] = self.binarize_config.fixed_threshold
        return Result(verdict, reason, score, regions, out_mask, merged, scale, mask_scale, frame_hw,
                      scope, thresholds, timings)

    def _apply_roi(self, mask: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        if self.verdict_spec.roi is None:
            return mask
        inside = np.zeros_like(mask)
        inside[rows, cols] = mask[rows, cols]
        return inside

    # -- public API ------------------------------------------------------------------
    def check(self, image: np.ndarray, color: str | None = None) -> None:
        """Raise the ``InputError`` that ``inspect`` would raise for this frame's type, shape or
        size, without running the model."""
        img = prepare_frame(image, color)
        self._check_size(self.plan(*img.shape[:2]))

    def inspect(self, image: np.ndarray, color: str | None = None) -> Result:
        """Inspect one frame (uint8/uint16; gray, BGR or RGB; any size)."""
        t_start = time.perf_counter()
        raw = self._infer(image, color)
        t0 = time.perf_counter()
        if self.scope == "rolling":
            # One merge: normalisation is affine and never clips here (this frame is in the
            # window), so normalising the merged raw map equals merging normalised tiles up to
            # float rounding.
            merged_raw = raw.plan.merge(raw.tiles, self.map_scale_override)
            with self._lock:
                self._rolling.update(raw.tiles, merged_raw)
                norm, bins = self._rolling.current()
            merged = norm.normalise(merged_raw, clip=False)
        else:
            cal = self.calibration
            merged = self._merge(raw, cal.norm, clip=True)
            bins = cal.bins
        result = self._finish(raw, merged, bins, self.scope, ms_since(t0))
        result.timings_ms["total"] = ms_since(t_start)
        return result

    def inspect_batch(self, images: Sequence[np.ndarray], colors: Sequence[str | None] | None = None,
                      scope: str | None = None, progress: bool = False) -> list[Result]:
        """Inspect several frames. ``scope="batch"`` computes all statistics over these frames,
        exactly as RoBiS does over a class split; otherwise each frame goes through ``inspect``."""
        scope = scope or self.scope
        if scope not in SCOPES:
            raise InputError(f"unknown scope {scope!r}; choose one of {SCOPES}")
        if scope not in ("batch", self.scope):
            raise InputError(f"this Inspector runs scope {self.scope!r}; for {scope!r} create one with "
                             f"scope={scope!r} (or use scope='batch')")
        colors = list(colors) if colors is not None else [None] * len(images)
        if len(colors) != len(images):
            raise InputError("colors must have one entry per image")
        if scope != "batch":
            return [self.inspect(im, c) for im, c in progress_bar(zip(images, colors), len(images), progress)]
        raws, merged_maps, _, t_merge = self._batch_merge(images, colors, progress)
        coarse_ms = [0.0] * len(raws)
        t0 = time.perf_counter()
        coarse, bins = binarize_batch(merged_maps, self.binarize_config,
                                      on_result=lambda i, _, ms: coarse_ms.__setitem__(i, ms))
        shared = (ms_since(t0) - sum(coarse_ms)) / len(raws)  # the batch statistics, per frame
        coarse_ms = [ms + shared for ms in coarse_ms]
        results = []
        for raw, merged, c, ms in zip(raws, merged_maps, coarse, coarse_ms):
            r = self._finish(raw, merged, bins, "batch", t_merge, (c, ms))
            r.timings_ms["total"] = sum(r.timings_ms.values())
            results.append(r)
        return results

    def calibrate(self, images: Iterable[np.ndarray], colors: Sequence[str | None] | None = None,
                  source: str = "", n_defective: int | None = None, progress: bool = False) -> Calibration:
        """Batch-scope statistics over ``images``, ready to freeze in the bundle."""
        return self.calibrate_with_reference(images, colors, source, n_defective, progress, 0)[0]

    def calibrate_with_reference(self, images: Iterable[np.ndarray],
                                 colors: Sequence[str | None] | None = None, source: str = "",
                                 n_defective: int | None = None, progress: bool = False,
                                 n_reference: int = DEFAULT_TILES) -> tuple[Calibration, list[np.ndarray]]:
        """``calibrate`` plus ``n_reference`` tiles of these images for the parity gate
        (``sdk.engines.reference.choose_tiles``: the top half by score, the rest spread down to the
        lowest)."""
        images = list(images)
        colors = list(colors) if colors is not None else [None] * len(images)
        raws, merged_maps, norm, _ = self._batch_merge(images, colors, progress)
        bins = batch_statistics(merged_maps, self.binarize_config)
        cal = Calibration(norm, bins, len(images), n_defective, source,
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        where = [(i, k) for i, r in enumerate(raws) for k in range(len(r.tiles))]
        scores = np.concatenate([r.tiles.reshape(len(r.tiles), -1).max(axis=1) for r in raws])
        tiles = []
        for j in choose_tiles(scores, n_reference):
            r = raws[where[j][0]]
            tiles.append(cut_tiles(r.frame, r.plan, self.preprocess_spec.size)[where[j][1]].copy())
        return cal, tiles

    def _batch_merge(self, images, colors, progress):
        """Batch scope up to the merged maps: tile normalisation over all frames, then merge."""
        if len(images) == 0:
            raise InputError("no images given")
        raws = [self._infer(im, c) for im, c in progress_bar(zip(images, colors), len(images), progress)]
        t0 = time.perf_counter()
        norm = NormStats.from_tile_maps([r.tiles for r in raws])
        merged_maps = [self._merge(r, norm, clip=False) for r in raws]
        return raws, merged_maps, norm, ms_since(t0) / len(raws)

    def set_calibration(self, cal: Calibration) -> None:
        """Use new calibrated statistics from now on (does not write the bundle)."""
        with self._lock:
            self.calibration = cal

    def describe(self) -> dict:
        """What runs: backend, provider, precision, the reason, scope and bundle."""
        return {"bundle": self.bundle.name, "model_sha256": self.bundle.model_sha256[:12],
                "backend": self.backend.name, "provider": self.backend.provider,
                "precision": self.backend.precision, "reason": self.backend.reason, "scope": self.scope,
                "scope_reason": self.scope_reason,
                "refine": (self.refiner.describe() if self.refiner is not None
                           else self.ttt.describe() if self.ttt is not None else None),
                "refine_mode": self.refine_mode}

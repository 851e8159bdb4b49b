"""Coarse mask from a merged 0..255 anomaly map: MEBin ∪ mean+3std (RoBiS), or one of them,
or a fixed per-product threshold. Each method binarises ``map > threshold`` then erodes with a
``erode_kernel``² box (RoBiS: 6); one grey-level erosion of the map serves all of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from ..errors import InputError
from ..timing import ms_since, progress_bar
from ..vocabulary import BINARIZE_METHODS, BINARIZE_PRECISIONS
from . import halfkeys
from .levelsets import compile_counts
from .mebin import MEBinParams, erode_map, mebin_threshold, mebin_threshold_keys
from .stats import BinStats

Method = Literal["mebin+meanstd", "mebin", "meanstd", "fixed"]


@dataclass(frozen=True)
class BinarizeConfig:
    """How coarse masks are made (``bundle.json`` ``postprocess.binarize``)."""

    method: Method = "mebin+meanstd"
    mebin: MEBinParams = field(default_factory=MEBinParams)
    meanstd_k: float = 3.0
    fixed_threshold: float | None = None
    precision: Literal["float16", "float32"] = "float16"  # RoBiS stores merged maps as float16

    def __post_init__(self) -> None:
        if self.method not in BINARIZE_METHODS:
            raise InputError(f"unknown binarisation method {self.method!r}; choose one of {BINARIZE_METHODS}")
        if self.method == "fixed" and self.fixed_threshold is None:
            raise InputError("method 'fixed' needs fixed_threshold (a value on the 0..255 map scale)")
        if self.precision not in BINARIZE_PRECISIONS:
            raise InputError(f"precision must be float16 or float32, got {self.precision!r}")

    @property
    def needs_stats(self) -> bool:
        return self.method != "fixed"

    def to_json(self) -> dict:
        return {"method": self.method, "sample_rate": self.mebin.sample_rate,
                "min_interval_len": self.mebin.min_interval_len, "erode_kernel": self.mebin.erode_kernel,
                "meanstd_k": self.meanstd_k, "fixed_threshold": self.fixed_threshold,
                "precision": self.precision}

    @classmethod
    def from_json(cls, d: dict) -> BinarizeConfig:
        """Read ``to_json``'s object (validated by the bundle schema, the one reader of its keys)."""
        from ..bundle.schema import read_binarize

        return read_binarize(d, "binarisation settings", path="binarize")


@dataclass(frozen=True)
class Binarized:
    """One coarse mask and the thresholds that made it."""

    mask: np.ndarray  # uint8 0/255
    mebin_threshold: int | None  # None: no stable interval (empty MEBin mask) or not used
    meanstd_threshold: float | None
    counts: np.ndarray | None  # MEBin component count per sweep level


def as_map(amap: np.ndarray, precision: str) -> np.ndarray:
    """The map as binarisation sees it: float16 (RoBiS' TIFF storage) or float32."""
    arr = np.asarray(amap)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"an anomaly map must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"an anomaly map must be numeric, got {arr.dtype}")
    if precision == "float16" and arr.dtype == np.float32 and arr.size >= 16:
        # OpenCV's conversion rounds like numpy's (to nearest even), 20x faster; -0 becomes +0
        return cv2.add(np.ascontiguousarray(arr), 0.0, dtype=cv2.CV_16F)
    return arr.astype(np.float16 if precision == "float16" else np.float32, copy=False)


class Binarizer:
    """Coarse masks with one set of statistics. Thresholds and MEBin's level table are prepared
    once; each map then costs one erosion, MEBin's level counting and one comparison. float16
    maps are handled as order keys (``halfkeys``): 16-bit erosion and comparisons, no conversion."""

    def __init__(self, cfg: BinarizeConfig, stats: BinStats | None) -> None:
        if cfg.needs_stats and stats is None:
            raise InputError(f"method {cfg.method!r} needs binarisation statistics "
                             "(batch, calibrated or rolling)")
        self.cfg, self.stats = cfg, stats
        k = cfg.mebin.erode_kernel
        self._kernel = np.ones((k, k), np.uint8) if k > 1 else None
        self._meanstd = stats.meanstd_threshold(cfg.meanstd_k) if cfg.method in _MEANSTD else None
        prepare_binarization(cfg)

    def __call__(self, amap: np.ndarray) -> Binarized:
        cfg = self.cfg
        m = as_map(amap, cfg.precision)
        f16 = m.dtype == np.float16
        if f16:
            eroded = halfkeys.to_keys(m)
            if self._kernel is not None:
                eroded = cv2.erode(eroded, self._kernel)
        else:
            eroded = erode_map(m, cfg.mebin.erode_kernel)
        thr_mebin, counts, cuts = None, None, []
        if cfg.method in _MEBIN:
            st = self.stats
            if f16:
                thr_mebin, counts = mebin_threshold_keys(eroded, st.mebin_min_th, st.mebin_max_th, cfg.mebin)
            else:
                thr_mebin, counts = mebin_threshold(eroded, st.mebin_min_th, st.mebin_max_th, cfg.mebin,
                                                    np.float32)
            if thr_mebin is not None:
                cuts.append(np.float32(thr_mebin))
        if self._meanstd is not None:
            cuts.append(self._meanstd)
        if cfg.method == "fixed":
            cuts.append(np.float32(cfg.fixed_threshold))
        # The union of "eroded > t" over the thresholds is "eroded > the smallest one".
        if not cuts:
            mask = np.zeros(m.shape, np.uint8)
        elif f16:
            mask = halfkeys.greater(eroded, halfkeys.floor_key(min(cuts)))
        else:
            mask = np.greater(eroded, min(cuts)).view(np.uint8) * np.uint8(255)
        ms = None if self._meanstd is None else float(self._meanstd)
        return Binarized(mask, thr_mebin, ms, counts)


_MEBIN = ("mebin", "mebin+meanstd")
_MEANSTD = ("meanstd", "mebin+meanstd")


def prepare_binarization(cfg: BinarizeConfig) -> None:
    """Compile (or load from numba's cache) the component counting ``cfg`` needs, once per
    process: e.g. when a service loads its bundles, so that no frame waits for it."""
    if cfg.method in _MEBIN:
        compile_counts()


def binarize(amap: np.ndarray, stats: BinStats | None, cfg: BinarizeConfig) -> Binarized:
    """Binarise one merged map (0..255 scale) with statistics of the caller's scope."""
    return Binarizer(cfg, stats)(amap)


def batch_statistics(maps: list[np.ndarray], cfg: BinarizeConfig) -> BinStats:
    """Batch-scope statistics of a set of maps as binarisation sees them (RoBiS: one class split)."""
    return BinStats.from_maps([as_map(m, cfg.precision) for m in maps])


def binarize_batch(maps: Iterable[np.ndarray], cfg: BinarizeConfig, stats: BinStats | None = None, *,
                   on_result: Callable[[int, Binarized, float], None] | None = None,
                   progress: bool = False, keep: bool = True,
                   total: int | None = None) -> tuple[list[Binarized], BinStats | None]:
    """Coarse masks of a set of maps: the one batch code path (``binarize`` command, Inspector).

    ``stats`` None: batch scope, :func:`batch_statistics` over ``maps``; otherwise those statistics
    (e.g. calibrated). ``on_result(index, result, ms)`` is called as each map is done (e.g. to
    write it out), ``ms`` being the time of that map alone. ``keep`` False: the results are only
    handed to ``on_result`` and the list returned is empty (a large split's masks are not all held).
    With ``stats`` given, ``maps`` may be any iterable (e.g. files read ahead), binarised as they
    come; ``total``: its length, for the progress bar.
    """
    if stats is None and cfg.needs_stats:
        maps = [as_map(m, cfg.precision) for m in maps]
        stats = batch_statistics(maps, cfg)
    if total is None and isinstance(maps, Sized):
        total = len(maps)
    run = Binarizer(cfg, stats)
    out = []
    prepared = (as_map(m, cfg.precision) for m in maps)
    for i, m in enumerate(progress_bar(prepared, total, progress, desc="binarize", unit="map")):
        t0 = time.perf_counter()
        r = run(m)
        if on_result is not None:
            on_result(i, r, ms_since(t0))
        if keep:
            out.append(r)
    return out, stats

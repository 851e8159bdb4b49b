"""Coarse mask from a merged 0..255 anomaly map: MEBin ∪ mean+3std (RoBiS), or one of them,
or a fixed per-product threshold. Each method binarises ``map > threshold`` then erodes with a
``erode_kernel``² box (RoBiS: 6); one grey-level erosion of the map serves all of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import InputError
from .mebin import MEBinParams, erode_map, mebin_threshold, work_dtype
from .stats import BinStats

Method = Literal["mebin+meanstd", "mebin", "meanstd", "fixed"]
METHODS: tuple[str, ...] = ("mebin+meanstd", "mebin", "meanstd", "fixed")


@dataclass(frozen=True)
class BinarizeConfig:
    """How coarse masks are made (``bundle.json`` ``postprocess.binarize``)."""

    method: Method = "mebin+meanstd"
    mebin: MEBinParams = field(default_factory=MEBinParams)
    meanstd_k: float = 3.0
    fixed_threshold: float | None = None
    precision: Literal["float16", "float32"] = "float16"  # RoBiS stores merged maps as float16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown binarisation method {self.method!r}; choose one of {METHODS}")
        if self.method == "fixed" and self.fixed_threshold is None:
            raise InputError("method 'fixed' needs fixed_threshold (a value on the 0..255 map scale)")
        if self.precision not in ("float16", "float32"):
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
    return arr.astype(np.float16 if precision == "float16" else np.float32, copy=False)


def binarize(amap: np.ndarray, stats: BinStats | None, cfg: BinarizeConfig) -> Binarized:
    """Binarise one merged map (0..255 scale) with statistics of the caller's scope."""
    m = as_map(amap, cfg.precision)
    if cfg.needs_stats and stats is None:
        raise InputError(f"method {cfg.method!r} needs binarisation statistics "
                         "(batch, calibrated or rolling)")
    eroded = erode_map(m, cfg.mebin.erode_kernel)
    mask = np.zeros(m.shape, dtype=bool)
    thr_mebin, thr_ms, counts = None, None, None
    if cfg.method in ("mebin", "mebin+meanstd"):
        thr_mebin, counts = mebin_threshold(eroded, stats.mebin_min_th, stats.mebin_max_th, cfg.mebin,
                                            work_dtype(m.dtype))
        if thr_mebin is not None:
            mask |= eroded > np.float32(thr_mebin)
    if cfg.method in ("meanstd", "mebin+meanstd"):
        thr_ms = stats.meanstd_threshold(cfg.meanstd_k)
        mask |= eroded > thr_ms
        thr_ms = float(thr_ms)
    if cfg.method == "fixed":
        thr_ms = None
        mask |= eroded > np.float32(cfg.fixed_threshold)
    return Binarized(mask.view(np.uint8) * np.uint8(255), thr_mebin, thr_ms, counts)


def binarize_batch(maps: list[np.ndarray], cfg: BinarizeConfig) -> tuple[list[Binarized], BinStats | None]:
    """Batch scope: statistics over ``maps`` (one class split, as RoBiS), then each map."""
    prepared = [as_map(m, cfg.precision) for m in maps]
    stats = BinStats.from_maps(prepared) if cfg.needs_stats else None
    return [binarize(m, stats, cfg) for m in prepared], stats

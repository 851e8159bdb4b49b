"""Statistics scopes of the post-processing, kept explicit (never mixed silently).

- ``batch``: computed over a set of maps exactly as RoBiS does offline over a class split.
- ``calibrated``: the same numbers frozen in the bundle (``bundle.json`` ``calibration``).
- ``rolling``: a window of recent frames, from per-frame sums (float64).

Two kinds of numbers exist. :class:`NormStats` normalises raw tile maps to 0..255 (global
min/max over all raw tile maps, padded tiles included). :class:`BinStats` drives
binarisation of the normalised merged maps (MEBin search range from the per-map maxima;
mean and population std over every pixel of every map, on the 0..1 scale, float32).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..errors import CalibrationError, InputError
from ..vocabulary import SCOPES  # noqa: F401 - re-exported
from . import halfkeys

NORM_EPS = 1e-8  # RoBiS: (a - min) / (max - min + 1e-8) * 255


@dataclass(frozen=True)
class NormStats:
    """Raw tile-map range used to bring model output to 0..255."""

    amap_min: float
    amap_max: float

    def normalise(self, raw: np.ndarray, clip: bool = True) -> np.ndarray:
        """RoBiS tile normalisation in float32; clipped to [0, 255] for streaming scopes."""
        lo = np.float32(self.amap_min)
        scale = np.float32(self.amap_max) - lo + np.float32(NORM_EPS)
        out = (np.asarray(raw, dtype=np.float32) - lo) / scale * np.float32(255.0)
        if clip:
            np.clip(out, 0.0, 255.0, out=out)
        return out

    @classmethod
    def from_tile_maps(cls, raw_maps: list[np.ndarray] | np.ndarray) -> NormStats:
        """Batch scope: global min and max over all raw tile maps."""
        arrs = [np.asarray(m) for m in (raw_maps if isinstance(raw_maps, list) else [raw_maps])]
        if not arrs or any(a.size == 0 for a in arrs):
            raise InputError("no tile maps to compute normalisation statistics from")
        return cls(float(min(np.float32(a.min()) for a in arrs)),
                   float(max(np.float32(a.max()) for a in arrs)))


@dataclass(frozen=True)
class BinStats:
    """Dataset-level numbers of the binarisation (RoBiS computes them over the test split)."""

    mebin_min_th: float
    mebin_max_th: float
    ms_mean: float  # mean of map / 255 over all pixels (float32 value)
    ms_std: float  # population std of map / 255 (float32 value)
    n_maps: int = 0

    def meanstd_threshold(self, k: float = 3.0) -> np.float32:
        """RoBiS' ``(mean + 3 * std) * 255`` in float32, in map units."""
        t = np.float32(np.float32(self.ms_mean) + np.float32(k) * np.float32(self.ms_std))
        return t * np.float32(255)

    @classmethod
    def from_maps(cls, maps: Sequence[np.ndarray], sizes: Sequence[int] | None = None) -> BinStats:
        """Batch scope, exactly as RoBiS: maxima in the maps' dtype; mean/std in float32 over
        all pixels of all maps (maps of different sizes are concatenated).

        With ``sizes`` (each map's pixel count, known before the maps are: e.g. from their files),
        ``maps`` is only indexed in order, once per pass, so its items may still be arriving
        (being read) while the first pass runs."""
        if not len(maps):
            raise InputError("no maps to compute binarisation statistics from")
        mean, std = pooled_mean_std(maps, sizes)
        maxima = [map_max(m) for m in maps]
        return cls(float(min(maxima)), float(max(maxima)), mean, std, len(maps))


def map_max(m: np.ndarray) -> np.floating:
    """``np.max(m)`` (NaN if any), fast for float16 maps without negative values or NaN."""
    m = np.asarray(m)
    if m.dtype == np.float16 and m.flags.c_contiguous:
        top = halfkeys.top_bits(m)
        if top is not None and top <= 0x7C00:  # +inf at most: no sign bit, no NaN, bits ordered as values
            return np.uint16(top).view(np.float16)
    return np.max(m)


def pooled_mean_std(maps: Sequence[np.ndarray], sizes: Sequence[int] | None = None) -> tuple[float, float]:
    """RoBiS' ``stack = np.array(maps).astype(np.float32) / 255.0; stack.mean(), stack.std()``,
    bit for bit, without the pooled array (for a large split hundreds of megabytes, and filling it
    costs more than the sums): :func:`pooled_sum` walks numpy's own summation over the maps.
    ``sizes``: as for :meth:`BinStats.from_maps`."""
    sizes = [int(np.asarray(m).size) for m in maps] if sizes is None else [int(n) for n in sizes]
    count = np.intp(sum(sizes))
    # numpy's _mean: the float32 sum over the pooled array, divided by the count into float32
    mean = np.array([pooled_sum(maps, _scaled, sizes)], np.float32)
    np.true_divide(mean, count, out=mean, casting="unsafe")

    def centred(m: np.ndarray, out: np.ndarray) -> np.ndarray:
        x = _scaled(m, out)
        return np.square(np.subtract(x, mean, out=x), out=x)

    # numpy's _var: subtract the mean, square, sum, divide by the count in float64
    var = pooled_sum(maps, centred, sizes)
    var = var.dtype.type(var / count)
    return float(mean[0]), float(var.dtype.type(np.sqrt(var)))


def _scaled(m: np.ndarray, out: np.ndarray) -> np.ndarray:
    """A map's pixels as RoBiS pools them, ``float32(v) / 255``, written into ``out``."""
    flat = np.asarray(m).reshape(-1)
    if flat.size != out.size:
        raise InputError(f"a map has {flat.size} pixels where {out.size} were expected")
    if flat.dtype == np.float16 and flat.size >= 16:  # OpenCV's conversion: exact (-0 becomes +0)
        cv2.add(flat.reshape(1, -1), 0.0, dst=out.reshape(1, -1), dtype=cv2.CV_32F)
    else:
        out[:] = flat
    return np.divide(out, np.float32(255.0), out=out)


_PAIRWISE_LEAF = 128  # numpy's PW_BLOCKSIZE


def pooled_sum(parts: Sequence[np.ndarray], values: Callable[[np.ndarray, np.ndarray], np.ndarray],
               sizes: Sequence[int] | None = None) -> np.float32:
    """``np.add.reduce(np.concatenate([values(p, out) for p in parts]))`` in float32, bit for bit,
    holding one part's values at a time: ``values(part, out)`` writes a part's float32 values into
    ``out`` (float32, the part's size; one buffer serves every part) and returns it. ``sizes``:
    the parts' sizes (default ``part.size``); parts are then indexed in order, each once.

    numpy sums a contiguous float32 array pairwise: more than 128 values are split in two, the
    first half rounded down to a multiple of 8, and the halves' sums added; the sum of a range
    therefore only depends on its length. Ranges that lie in one part are summed by numpy itself
    on that part; the few that straddle two parts are split the same way, down to numpy's blocks
    of at most 128 values, which are gathered and summed by numpy. (Zero signs aside, which the
    final ``0 +`` of the reduction erases, this is numpy's tree.)
    """
    sizes = [int(p.size) for p in parts] if sizes is None else [int(n) for n in sizes]
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + n)
    total = starts[-1]
    if total == 0:
        return np.float32(0.0)
    buf = np.empty(max(sizes), np.float32)  # a fresh buffer per part would fault its pages
    held = -1  # the part whose values are in buf

    def part_values(k: int) -> np.ndarray:
        nonlocal held
        if held != k:  # ranges come in order: an earlier part is never needed again
            held = k
            values(parts[k], buf[:sizes[k]])
        return buf[:sizes[k]]

    def piece(k: int, lo: int, n: int) -> np.ndarray:  # pooled values lo .. lo + n, from part k on
        if lo + n <= starts[k + 1]:
            return part_values(k)[lo - starts[k]:lo - starts[k] + n]
        out = []
        while n > 0:  # a block of at most 128 values across parts: copied before buf moves on
            take = min(n, starts[k + 1] - lo)
            out.append(part_values(k)[lo - starts[k]:lo - starts[k] + take].copy())
            lo, n, k = lo + take, n - take, k + 1
        return np.concatenate(out)

    def tree(lo: int, n: int) -> np.float32:
        k = bisect.bisect_right(starts, lo) - 1
        if lo + n <= starts[k + 1] or n <= _PAIRWISE_LEAF:
            return np.add.reduce(piece(k, lo, n))
        half = n // 2
        half -= half % 8
        return tree(lo, half) + tree(lo + half, n - half)

    return np.float32(0.0) + tree(0, total)


@dataclass(frozen=True)
class Calibration:
    """Frozen statistics of the ``calibrated`` scope, as stored in ``bundle.json``."""

    norm: NormStats | None
    bins: BinStats
    n_images: int = 0
    n_defective: int | None = None
    source: str = ""
    created: str = ""

    def to_json(self) -> dict:
        d = {"scope": "calibrated", "n_images": self.n_images, "n_defective": self.n_defective,
             "source": self.source, "created": self.created}
        if self.norm is not None:
            d.update(asdict(self.norm))
        d.update({k: v for k, v in asdict(self.bins).items() if k != "n_maps"})
        return d

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        """Read ``to_json``'s object (validated by the bundle schema, the one reader of its keys)."""
        from ..bundle.schema import read_calibration
        from ..errors import BundleError

        try:
            return read_calibration(d, "calibration")
        except BundleError as exc:
            raise CalibrationError(f"{exc}; re-run `robis-edge calibrate`") from None


@dataclass
class _FrameSums:
    tile_min: float
    tile_max: float
    raw_max: float
    total: float
    total_sq: float
    count: int


class RollingStats:
    """Statistics over the last ``window`` frames, derived from per-frame raw sums.

    Because tile normalisation is affine and the current frame is inside the window (no
    clipping), the normalised statistics follow from raw ones: this equals the batch scope
    over the same frames up to float rounding (float64 sums instead of numpy's float32
    pairwise sums). Not thread-safe: the Inspector guards it.
    """

    def __init__(self, window: int = 64) -> None:
        if window < 1:
            raise InputError(f"rolling window must be >= 1 frame, got {window}")
        self.window = window
        self._frames: deque[_FrameSums] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._frames)

    def update(self, raw_tiles: np.ndarray, raw_merged: np.ndarray) -> None:
        m = np.asarray(raw_merged, dtype=np.float64)
        self._frames.append(_FrameSums(float(np.min(raw_tiles)), float(np.max(raw_tiles)),
                                       float(m.max()), float(m.sum()), float(np.square(m).sum()), m.size))

    def current(self) -> tuple[NormStats, BinStats]:
        if not self._frames:
            raise CalibrationError("rolling statistics are empty: no frame seen yet")
        fr = list(self._frames)
        norm = NormStats(min(f.tile_min for f in fr), max(f.tile_max for f in fr))
        scale = 255.0 / (norm.amap_max - norm.amap_min + NORM_EPS)
        n = sum(f.count for f in fr)
        mean = sum(f.total for f in fr) / n
        var = max(sum(f.total_sq for f in fr) / n - mean * mean, 0.0)
        maxima = [(f.raw_max - norm.amap_min) * scale for f in fr]
        bins = BinStats(min(maxima), max(maxima), (mean - norm.amap_min) * scale / 255.0,
                        np.sqrt(var) * scale / 255.0, len(fr))
        return norm, bins


def calibration_warnings(cal: Calibration, min_images: int, has_defective: bool) -> list[str]:
    """What is wrong or risky about a calibration set, in words for the person running it."""
    out = []
    b = cal.bins
    if cal.n_images < min_images:
        out.append(f"only {cal.n_images} images: statistics of a small set are unstable "
                   f"(use at least {min_images})")
    if not b.mebin_max_th > b.mebin_min_th:
        out.append("all images have the same maximum score: the MEBin search range is empty and "
                   "MEBin will produce empty masks")
    elif b.mebin_max_th - b.mebin_min_th < 5.0:
        out.append(f"the MEBin search range is very narrow ({b.mebin_max_th - b.mebin_min_th:.2f} on 0..255)")
    if b.ms_std == 0.0:
        out.append("the anomaly maps are constant: mean+3std cannot separate anything")
    if cal.norm.amap_max <= cal.norm.amap_min:
        out.append("the model's raw scores are constant over the set: normalisation is degenerate")
    if not has_defective:
        out.append("no defective images given (--defective): with good parts only the MEBin range "
                   "collapses and thresholds shift (every good map peaks alike)")
    return out


"""MEBin (Main Element Binarization) exactly as RoBiS runs it, computed fast.

Per map, RoBiS normalises the map into the search range, then for 64 thresholds
(255, 251, ..., 3) binarises, erodes with a 6×6 box and counts 8-connected components;
the end of the longest stable run of equal non-zero counts gives the threshold.

The fast path gives the same counts with one erosion and no per-threshold pass over the map:
- erosion by a flat element commutes with thresholding and with the (monotone) search-range
  normalisation, so the map is eroded once (same element, anchor and border);
- every pixel gets the first level index at which it is present: for float16 maps through a
  table over the 65536 float16 values (the level is monotone in the value, so 64 thresholds on
  the order keys of ``halfkeys`` define it), for float32 maps by normalising the candidates;
- ``levelsets.level_set_counts`` counts the components of all 64 level sets at once, reading
  float16 maps' levels through the table as it goes.

Arithmetic follows the map's dtype as RoBiS does: float16 maps (RoBiS' TIFFs) are normalised
and thresholds mapped back in float16, float32 maps in float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from . import halfkeys
from .levelsets import ABSENT, compact_index, level_set_counts

_F16 = np.float16
_F32 = np.float32


@dataclass(frozen=True)
class MEBinParams:
    """Parameters of the threshold sweep (RoBiS defaults)."""

    sample_rate: int = 4
    min_interval_len: int = 4
    erode_kernel: int = 6

    def __post_init__(self) -> None:
        if self.sample_rate < 1 or self.sample_rate > 255:
            raise InputError(f"MEBin sample_rate must be in 1..255, got {self.sample_rate}")
        if self.min_interval_len < 1:
            raise InputError(f"MEBin min_interval_len must be >= 1, got {self.min_interval_len}")
        if self.erode_kernel < 1:
            raise InputError(f"erode_kernel must be >= 1 (1 = no erosion), got {self.erode_kernel}")

    def levels(self) -> np.ndarray:
        """Sweep thresholds, highest first: 255, 255 - rate, ..., > 0."""
        return np.arange(255, 0, -self.sample_rate)


def work_dtype(map_dtype: np.dtype) -> type:
    """Arithmetic dtype RoBiS would use for maps of this dtype."""
    return _F16 if np.dtype(map_dtype) == np.float16 else _F32


def erode_map(amap: np.ndarray, kernel: int) -> np.ndarray:
    """Grey-level erosion (min over a kernel×kernel box, OpenCV anchor, border ignored), float32.

    NaN counts as -inf (below every threshold), as binarising first and eroding then would.
    """
    m32 = np.ascontiguousarray(amap, dtype=_F32)
    if np.isnan(m32).any():
        m32 = np.where(np.isnan(m32), -np.inf, m32).astype(_F32)
    if kernel <= 1:
        return m32
    return cv2.erode(m32, np.ones((kernel, kernel), np.uint8))


def search_normalise(values: np.ndarray, min_th, max_th, dtype: type) -> np.ndarray:
    """RoBiS' ``where(m < min_th, 0, (m - min_th) / (max_th - min_th) * 255)`` in ``dtype``.

    Computed in float32 with a rounding to ``dtype`` after each operation, which is what numpy's
    float16 arithmetic does, only faster. Returns float32 holding ``dtype`` values.
    """
    v = np.asarray(values, dtype=_F32)
    lo = dtype(min_th)
    rng = dtype(max_th) - lo
    if dtype is _F16:
        def rnd(a: np.ndarray) -> np.ndarray:
            return a.astype(_F16).astype(_F32)
    else:
        def rnd(a: np.ndarray) -> np.ndarray:
            return a
    with np.errstate(over="ignore"):  # float16 overflows to inf exactly as in RoBiS
        norm = rnd(rnd(rnd(v - _F32(lo)) / _F32(rng)) * _F32(255))
    norm[v < _F32(lo)] = 0.0
    return norm


def first_levels(values: np.ndarray, params: MEBinParams) -> np.ndarray:
    """Index of the first sweep level at which each value is present (``value > 255 - rate*j``).

    Values must already exceed the lowest level. Exact in float64 for float32 inputs.
    """
    n = params.levels().size
    steps = np.clip((255.0 - values.astype(np.float64)) / params.sample_rate, -1.0, n)  # inf: -1
    first = np.floor(steps).astype(np.int64) + 1
    return np.clip(first, 0, n - 1, out=first)


def level_image(eroded_norm: np.ndarray, params: MEBinParams) -> np.ndarray:
    """uint8 level image of a normalised eroded map: first level of each pixel, ABSENT if never."""
    v = np.asarray(eroded_norm, dtype=_F32)
    lvl = np.full(v.shape, ABSENT, np.uint8)
    present = v > params.levels()[-1]
    lvl[present] = first_levels(v[present], params)
    return lvl


def level_counts(eroded_norm: np.ndarray, params: MEBinParams) -> np.ndarray:
    """Component counts (8-connected) of ``eroded_norm > t`` for every sweep threshold t.

    ``eroded_norm`` is a normalised map eroded with the ``params.erode_kernel`` box (in either order).
    """
    v = np.asarray(eroded_norm, dtype=_F32)
    idx = compact_index(halfkeys.greater(v, float(params.levels()[-1])))
    if idx is None:
        return np.zeros(params.levels().size, np.int64)
    return level_set_counts(level_image(v[idx], params), params.levels().size)


@functools.lru_cache(maxsize=16)
def _key_table(lo_bits: int, hi_bits: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """For float16 search range bits: per level the smallest order key present at that level, and
    the level of every key (ABSENT below the lowest level). The level is monotone in the value, so
    a bisection over keys finds each bound exactly, with RoBiS' float16 normalisation."""
    lo, hi = (np.uint16(b).view(_F16) for b in (lo_bits, hi_bits))
    levels = np.arange(255, 0, -sample_rate)
    start = np.full(levels.size, halfkeys.KEY_NEG_INF, np.int64)
    stop = np.full(levels.size, halfkeys.KEY_POS_INF + 1, np.int64)  # stop: never present
    while np.any(start < stop):
        mid = (start + stop) // 2
        with np.errstate(invalid="ignore"):
            above = search_normalise(halfkeys.values_of(mid), lo, hi, _F16) > levels
        stop = np.where(above, mid, stop)
        start = np.where(above, start, mid + 1)
    lut = np.full(1 << 16, ABSENT, np.uint8)
    lut[start[-1]:] = np.repeat(np.arange(levels.size - 1, -1, -1, dtype=np.uint8),
                                np.diff(np.r_[start[::-1], 1 << 16]))
    start.setflags(write=False)
    lut.setflags(write=False)
    return start, lut


def stable_interval_end(counts: np.ndarray | list[int], min_interval_len: int) -> int | None:
    """Index chosen by RoBiS' stable-interval rule, or None when there is no stable interval.

    Runs are maximal runs of equal non-zero counts of at least ``min_interval_len`` levels; the
    count whose longest run (end - start) is longest wins (ties: the count met first, i.e. at
    the higher threshold); within it the longest run wins (ties: the later run); its end is
    returned.
    """
    seq = [int(c) for c in counts]
    best_len: dict[int, int] = {}  # insertion order = order in which counts got a run
    runs: dict[int, list[tuple[int, int]]] = {}
    i, n = 0, len(seq)
    while i < n:
        j = i
        while j + 1 < n and seq[j + 1] == seq[i]:
            j += 1
        if seq[i] != 0 and j - i + 1 >= min_interval_len:
            runs.setdefault(seq[i], []).append((i, j))
            best_len[seq[i]] = max(best_len.get(seq[i], -1), j - i)
        i = j + 1
    if not runs:
        return None
    winner = max(best_len, key=best_len.__getitem__)  # first key among equals
    longest = max(e - s for s, e in runs[winner])
    return [e for s, e in runs[winner] if e - s == longest][-1]


def mebin_threshold(eroded_map: np.ndarray, min_th, max_th, params: MEBinParams,
                    dtype: type) -> tuple[int | None, np.ndarray]:
    """MEBin threshold (in map units, truncated to int as RoBiS does) and the level counts.

    ``eroded_map`` is the map already eroded with :func:`erode_map`. Returns ``None`` as the
    threshold when no stable interval exists (empty MEBin mask) or the search range is empty.
    """
    if dtype is _F16:
        return mebin_threshold_keys(halfkeys.to_keys(np.asarray(eroded_map).astype(_F16)), min_th, max_th,
                                    params)
    if not _valid_range(min_th, max_th, dtype):
        return None, np.zeros(params.levels().size, dtype=np.int64)
    v = np.asarray(eroded_map, dtype=_F32)
    idx = compact_index(halfkeys.greater(v, float(dtype(min_th))))  # only these can be present
    counts = (np.zeros(params.levels().size, np.int64) if idx is None
              else level_counts(search_normalise(v[idx], min_th, max_th, dtype), params))
    return threshold_from_counts(counts, min_th, max_th, params, dtype), counts


def mebin_threshold_keys(eroded_keys: np.ndarray, min_th, max_th,
                         params: MEBinParams) -> tuple[int | None, np.ndarray]:
    """:func:`mebin_threshold` of a float16 map given as eroded order keys (``halfkeys.to_keys``)."""
    n = params.levels().size
    if not _valid_range(min_th, max_th, _F16):
        return None, np.zeros(n, dtype=np.int64)
    cand = key_candidates(eroded_keys, min_th, max_th, params)
    counts = np.zeros(n, np.int64) if cand is None else level_set_counts(cand[0], n, cand[1])
    return threshold_from_counts(counts, min_th, max_th, params, _F16), counts


def key_candidates(eroded_keys: np.ndarray, min_th, max_th,
                   params: MEBinParams) -> tuple[np.ndarray, np.ndarray] | None:
    """``(keys, table)``: the eroded order keys of a float16 map around those present at some
    level (``levelsets.compact_index`` of them) and the level of every key, for
    ``level_set_counts(keys, n_levels, table)``; None if no key is present. Valid search range only."""
    bits = (int(_F16(v).view(np.uint16)) for v in (min_th, max_th))
    first_key, lut = _key_table(*bits, params.sample_rate)
    if first_key[-1] > halfkeys.KEY_POS_INF:
        return None
    idx = compact_index(halfkeys.greater(eroded_keys, int(first_key[-1]) - 1))
    return None if idx is None else (eroded_keys[idx], lut)


def _valid_range(min_th, max_th, dtype: type) -> bool:
    if not np.isfinite(float(min_th)) or not np.isfinite(float(max_th)):
        raise InputError(f"MEBin search range must be finite, got [{min_th}, {max_th}]")
    # All maps share one maximum: RoBiS would divide by zero. No search is possible.
    return bool(dtype(max_th) > dtype(min_th))


def threshold_from_counts(counts: np.ndarray, min_th, max_th, params: MEBinParams,
                          dtype: type) -> int | None:
    """RoBiS' threshold in map units from the level counts (stable-interval end, mapped in ``dtype``)."""
    idx = stable_interval_end(counts, params.min_interval_len)
    if idx is None:
        return None
    t = int(255 - idx * params.sample_rate)
    lo = dtype(min_th)
    rng = dtype(max_th) - lo
    # Same scalar arithmetic as RoBiS: a Python int times a `dtype` scalar stays in `dtype`.
    return int(t * rng / 255 + lo)

"""float16 maps as order-preserving uint16 keys, so that OpenCV's fast 16-bit kernels (erosion,
comparison, min/max) work on them without a float conversion.

``key(a) < key(b)`` whenever ``a < b``; -0 and +0 get neighbouring keys. NaN gets a key below
-inf: a NaN pixel is never above a threshold, as in numpy's comparisons, and a grey-level erosion
(a minimum) spreads it like a pixel below every threshold, which is what eroding the binarised
map does.
"""

from __future__ import annotations

import cv2
import numpy as np

_POS_INF_BITS = 0x7C00
KEY_POS_INF = _POS_INF_BITS | 0x8000  # key of +inf
KEY_NEG_INF = 0xFC00 ^ 0xFFFF  # key of -inf
KEY_POS_ZERO = 0x8000  # key of +0 (-0 is just below)


_CV_MIN_SIZE = 16  # OpenCV's Python binding reads a 1×1 array as a scalar: tiny arrays go to numpy


def top_bits(m16: np.ndarray) -> int | None:
    """The largest uint16 bit pattern of a 2-D float16 array, in one OpenCV pass (None for tiny
    arrays). At most ``0x7C00`` (+inf) means no sign bit and no NaN: the bits are then ordered like
    the values."""
    bits = np.ascontiguousarray(m16, np.float16).view(np.uint16)
    if bits.ndim != 2 or bits.size < _CV_MIN_SIZE:
        return None
    return int(cv2.minMaxLoc(bits)[1])


def all_finite(m16: np.ndarray) -> bool:
    """No NaN and no infinity in a float16 array, read from its bits (exponent not all ones)."""
    top = top_bits(m16)
    if top is not None and top < _POS_INF_BITS:
        return True  # no sign bit anywhere, all finite: one pass, no temporary array
    bits = np.ascontiguousarray(m16, np.float16).view(np.uint16)
    return bits.size == 0 or bool((bits & np.uint16(0x7FFF)).max() < _POS_INF_BITS)


def greater(a: np.ndarray, t: float) -> np.ndarray:
    """``a > t`` as a uint8 0/255 image (OpenCV's comparison, numpy's for tiny arrays)."""
    if a.size >= _CV_MIN_SIZE and a.ndim == 2:
        return cv2.compare(a, t, cv2.CMP_GT)
    return np.greater(a, t).view(np.uint8) * np.uint8(255)


def to_keys(m16: np.ndarray) -> np.ndarray:
    """uint16 order keys of a float16 array."""
    bits = np.ascontiguousarray(m16, np.float16).view(np.uint16)
    if bits.ndim != 2 or bits.size < _CV_MIN_SIZE:
        k = bits.astype(np.int64)
        k = np.where(k & 0x8000, k ^ 0xFFFF, k | 0x8000)
        k[k > KEY_POS_INF] = 0
        return k.astype(np.uint16)
    if top_bits(bits.view(np.float16)) <= _POS_INF_BITS:
        return cv2.add(bits, 0x8000)  # 0 <= value <= inf everywhere: the bits are ordered already
    negative = cv2.compare(bits, 0x7FFF, cv2.CMP_GT).astype(np.uint16)  # 255 where the sign bit is set
    keys = cv2.bitwise_xor(bits, cv2.bitwise_or(cv2.multiply(negative, 257), 0x8000))
    keys[keys > KEY_POS_INF] = 0  # positive NaNs (negative NaNs already fall below -inf)
    return keys


def key_of(value: float | np.floating) -> int:
    """Key of one float16 value (a float is rounded to float16 first, to nearest)."""
    f = np.float16(value)
    if np.isnan(f):
        return 0
    bits = int(f.view(np.uint16))
    return bits ^ 0xFFFF if bits & 0x8000 else bits | 0x8000


def values_of(keys: np.ndarray) -> np.ndarray:
    """float16 values of keys (the inverse of :func:`to_keys` for numbers)."""
    k = np.asarray(keys, np.int64)
    bits = np.where(k & 0x8000, k ^ 0x8000, k ^ 0xFFFF).astype(np.uint16)
    return bits.view(np.float16)


def floor_key(threshold: float) -> int:
    """Key ``t`` such that, for every float16 ``v``: ``v > threshold`` exactly when ``key(v) > t``.

    ``threshold`` is any float (e.g. a float32 threshold); NaN or +inf: no float16 is above it.
    """
    t = float(threshold)
    if np.isnan(t) or t == np.inf:
        return 0xFFFF
    f = np.float16(t) if abs(t) < 65520.0 else np.float16(np.copysign(np.inf, t))
    if float(f) > t:  # rounded up: step down to the largest float16 <= threshold
        f = np.nextafter(f, np.float16(-np.inf))
    return KEY_POS_ZERO if f == 0 else key_of(f)

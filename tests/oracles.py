"""Straightforward implementations kept as oracles for the fast code paths.

Each follows the reference behaviour step by step, with no shortcut: 64 binarisations,
64 erosions and 64 labelings per map, float16 arithmetic by numpy itself.
"""

from __future__ import annotations

import cv2
import numpy as np


def erode_box(binary: np.ndarray, k: int = 6) -> np.ndarray:
    return cv2.erode(binary, np.ones((k, k), np.uint8), iterations=1)


def level_counts_oracle(amap: np.ndarray, lo, hi, rate: int = 4, k: int = 6) -> list[int]:
    """Component counts at every sweep level, the slow way, in the map's own dtype."""
    norm = np.where(amap < lo, 0, ((amap - lo) / (hi - lo)) * 255)
    counts = []
    for t in range(255, 0, -rate):
        b = erode_box(np.where(norm > t, 255, 0).astype(np.uint8), k)
        counts.append(cv2.connectedComponentsWithStats(b, connectivity=8)[0] - 1)
    return counts


def stable_end_oracle(seq: list[int], min_len: int) -> int | None:
    """Stable-interval rule written as a plain scan over all (start, end) runs."""
    runs = []
    start = 0
    for i in range(1, len(seq) + 1):
        if i == len(seq) or seq[i] != seq[start]:
            if seq[start] != 0 and i - start >= min_len:
                runs.append((seq[start], start, i - 1))
            start = i
    if not runs:
        return None
    order: list[int] = []
    for c, _, _ in runs:
        if c not in order:
            order.append(c)
    longest = {c: max(e - s for cc, s, e in runs if cc == c) for c in order}
    best = max(longest.values())
    winner = next(c for c in order if longest[c] == best)
    cand = [(s, e) for c, s, e in runs if c == winner and e - s == longest[winner]]
    return cand[-1][1]


def binarize_batch_oracle(maps: list[np.ndarray], rate: int = 4, min_len: int = 4, k: int = 6):
    """RoBiS' coarse masks over one class split (same-shape maps), the slow way.

    Returns (masks, mebin thresholds (255 where no interval), (min_th, max_th), mean+3std threshold).
    """
    maxima = [np.max(m) for m in maps]
    lo, hi = min(maxima), max(maxima)
    stack = np.array(maps).astype(np.float32) / 255.0
    t_ms = stack.mean() + 3 * stack.std()
    masks, thresholds = [], []
    for m in maps:
        ms = erode_box(np.where(m > t_ms * 255, 255, 0).astype(np.uint8), k)
        end = stable_end_oracle(level_counts_oracle(m, lo, hi, rate, k), min_len)
        thr = 255 if end is None else int((255 - end * rate) * (hi - lo) / 255 + lo)
        mb = erode_box(np.where(m > thr, 255, 0).astype(np.uint8), k)
        if end is None:
            mb[:] = 0
        masks.append((np.logical_or(mb, ms) * 255).astype(np.uint8))
        thresholds.append(thr)
    return masks, thresholds, (lo, hi), t_ms * 255

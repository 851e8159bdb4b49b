"""Straightforward implementations kept as oracles for the fast code paths.

Each follows the reference behaviour step by step, with no shortcut: 64 binarisations,
64 erosions and 64 labelings per map, float16 arithmetic by numpy itself. At the end, the
synthetic splits the oracle comparisons and the benchmark run on.
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


def binarize_map_oracle(m: np.ndarray, lo, hi, t_ms, rate: int = 4, min_len: int = 4, k: int = 6):
    """One map with given statistics (calibrated scope), the slow way: (mask, MEBin threshold or 255).

    ``lo``, ``hi`` in the map's dtype; ``t_ms`` the mean+3std threshold in map units.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        end = stable_end_oracle(level_counts_oracle(m, lo, hi, rate, k), min_len) if hi > lo else None
        thr = 255 if end is None else int((255 - end * rate) * (hi - lo) / 255 + lo)
        mask = erode_box(np.where(m > t_ms, 255, 0).astype(np.uint8), k)
        if end is not None:
            mask |= erode_box(np.where(m > thr, 255, 0).astype(np.uint8), k)
    return mask, thr


# --------------------------------------------------------------------------------------------
# Synthetic splits for the oracle comparisons and benchmarks/bench_binarize.py
# --------------------------------------------------------------------------------------------


def robis_style_maps(seed: int, n: int = 24, h: int = 512, w: int = 612) -> list[np.ndarray]:
    """Held-out maps made like the golden split (merged maps of a random-weight INP-Former, float16,
    0..255): blurred-noise texture of varying grain, level and contrast, slow shading, and a few
    bright elliptical blobs and thin streaks. Their textures give many small components spread
    over many MEBin levels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        grain = rng.uniform(1.0, 6.0)
        bg = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), grain)
        m = rng.uniform(30, 80) + rng.uniform(6, 22) * bg / (bg.std() + 1e-6)
        shade = cv2.GaussianBlur(rng.standard_normal((h // 16, w // 16)).astype(np.float32), (0, 0), 2)
        m += cv2.resize(shade, (w, h)) * rng.uniform(0, 15)
        blobs = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(0, 4))):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(6, 30)), int(rng.integers(4, 20)))
            angle, value = float(rng.uniform(0, 180)), float(rng.uniform(110, 250))
            cv2.ellipse(blobs, centre, axes, angle, 0, 360, value, -1)
        for _ in range(int(rng.integers(0, 3))):
            p = rng.integers(0, [w, h])
            d = rng.normal(size=2)
            q = p + d / np.linalg.norm(d) * rng.uniform(20, 60)
            cv2.line(blobs, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), float(rng.uniform(90, 200)),
                     int(rng.integers(2, 5)))
        m = np.maximum(m, cv2.GaussianBlur(blobs, (0, 0), 1.0))
        out.append(np.clip(m, 0, 255).astype(np.float16))
    return out


def noise_maps(seed: int, n: int = 24, h: int = 512, w: int = 612) -> list[np.ndarray]:
    """Noise-like maps (float16): fine blurred noise stretched to 0..top, top 140..255, so that a
    large share of every map lies in the MEBin search range, in many small components over many
    levels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        grain = float(rng.choice([0.8, 1.2, 1.6, 2.4]))
        m = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), grain)
        out.append(((m - m.min()) / np.ptp(m) * rng.uniform(140, 255)).astype(np.float16))
    return out

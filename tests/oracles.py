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


def selftest_model_oracle(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """The selftest's shipped model (sdk/engines/selftest_model.py) in plain numpy."""
    from onnx import numpy_helper

    from sdk.engines.selftest_model import DIM, GRID, MAP, PATCH, build_model

    model = build_model(seed)

    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = image.astype(np.float64)
    n = len(x)
    patches = x.reshape(n, 3, GRID, PATCH, GRID, PATCH).transpose(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, GRID * GRID, -1)
    tok = patches @ w["patch.w"].reshape(DIM, -1).T + w["patch.b"]
    mu, var = tok.mean(-1, keepdims=True), tok.var(-1, keepdims=True)
    h = (tok - mu) / np.sqrt(var + 1e-6) * w["ln.g"] + w["ln.b"]
    q, k, v = h @ w["q.w"], h @ w["k.w"], h @ w["v.w"]
    a = q @ k.transpose(0, 2, 1) / np.sqrt(DIM)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    feat = tok + a @ v
    unit = feat / np.maximum(np.linalg.norm(feat, axis=-1, keepdims=True), 1e-12)
    p = w["proto"] / np.linalg.norm(w["proto"])
    small = (1 - unit @ p).reshape(n, GRID, GRID)
    pos = np.linspace(0, GRID - 1, MAP)  # align_corners=True sampling positions
    i0 = np.minimum(np.floor(pos).astype(int), GRID - 2)
    f = pos - i0
    rows = small[:, i0] * (1 - f)[None, :, None] + small[:, i0 + 1] * f[None, :, None]
    out = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]
    return out[:, None].astype(np.float32)


def ttt_oracle(score: np.ndarray, plan, tile_features: np.ndarray, scale: float, spec,
               coarse_mask: np.ndarray | None = None) -> dict:
    """TTT4AS the dense way (the paper's §3): every feature channel merged and upsampled to the
    map, local maxima by comparing each pixel with its 8 neighbours, the hard points as squares
    around each peak, a nominal grid, a LinearSVC (hinge loss) on those points, and every pixel of
    the dense feature map classified."""
    from sklearn.svm import LinearSVC

    s = np.asarray(score, np.float32)
    h, w = s.shape
    padded = np.pad(s, 1, constant_values=-np.inf)
    local_max = np.ones_like(s, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                local_max &= s >= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    peaks = local_max & (s > np.percentile(s, spec.percentile))
    anomalous = np.zeros((h, w), bool)
    r = spec.hard_radius
    for py, px in zip(*np.nonzero(peaks)):
        anomalous[max(0, py - r):py + r + 1, max(0, px - r):px + r + 1] = True
    nominal = np.zeros((h, w), bool)
    for y in range(spec.nominal_stride // 2, h, spec.nominal_stride):
        for x in range(spec.nominal_stride // 2, w, spec.nominal_stride):
            nominal[y, x] = not anomalous[y, x]
    feats = np.asarray(tile_features, np.float32)
    if spec.normalize == "l2":
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), np.float32(1e-12))
    dense = np.stack([plan.merge(feats[:, k], scale) for k in range(feats.shape[1])], axis=-1)
    pos, neg = np.nonzero(anomalous), np.nonzero(nominal)
    x = np.concatenate([dense[pos], dense[neg]])
    y = np.concatenate([np.ones(len(pos[0]), np.int8), np.zeros(len(neg[0]), np.int8)])
    svc = LinearSVC(C=spec.svm_c, loss="hinge", dual=True, max_iter=spec.max_iter, random_state=0,
                    class_weight="balanced" if spec.class_weight == "balanced" else None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svc.fit(x, y)
    decision = dense.astype(np.float64) @ svc.coef_[0] + svc.intercept_[0]
    mask = np.where(decision > 0, 255, 0).astype(np.uint8)
    if spec.within_coarse:
        mask[np.asarray(coarse_mask) == 0] = 0
    return {"anomalous": anomalous, "nominal": nominal, "features": dense, "decision": decision,
            "mask": mask, "coef": svc.coef_[0],
            "intercept": float(svc.intercept_[0])}


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

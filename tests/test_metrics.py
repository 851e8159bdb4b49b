"""Metric correctness: sdk/tools/evaluation/metrics.py against straightforward implementations kept here
and against hand-computed cases.

Oracles (deliberately slow and plain):
- ``label_oracle``: 8-connected components by breadth-first search (no OpenCV).
- ``pro_curve_bruteforce``: one pass over the images per distinct threshold, overlap of every
  region counted explicitly.
- ``pro_curve_sorted``: the MVTec AD evaluation's algorithm (sort all pixels, cumulative sums of
  1/region size and of good pixels, merge equal scores).
- ``trapezoid_oracle``: segment-by-segment area, cut at the limit.
- ``auroc_pairs``: the Mann–Whitney count over all (positive, negative) pairs.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.tools.evaluation import metrics as M

# -- oracles ------------------------------------------------------------------------------------


def label_oracle(gt: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels 1..n of the nonzero pixels, by BFS."""
    gt = np.asarray(gt) > 0
    h, w = gt.shape
    lab = np.zeros((h, w), np.int64)
    n = 0
    for y0, x0 in zip(*np.nonzero(gt)):  # row-major scan of the defect pixels
        if lab[y0, x0]:
            continue
        n += 1
        lab[y0, x0] = n
        q = deque([(y0, x0)])
        while q:
            y, x = q.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and gt[yy, xx] and lab[yy, xx] == 0:
                        lab[yy, xx] = n
                        q.append((yy, xx))
    return lab, n


def pro_curve_bruteforce(maps, gts):
    """(fpr, pro) at every distinct score, highest first, with (0, 0) and (1, 1) added."""
    regions, good = [], []
    for m, g in zip(maps, gts):
        lab, n = label_oracle(g)
        regions += [m[lab == k] for k in range(1, n + 1)]
        good.append(m[lab == 0])
    good = np.concatenate(good)
    thresholds = np.unique(np.concatenate([np.ravel(m) for m in maps]))[::-1]
    fpr, pro = [0.0], [0.0]
    for t in thresholds:
        fpr.append(np.count_nonzero(good >= t) / good.size)
        pro.append(float(np.mean([np.count_nonzero(r >= t) / r.size for r in regions])))
    return np.array(fpr + [1.0]), np.array(pro + [1.0])


def pro_curve_sorted(maps, gts):
    """The MVTec AD evaluation's compute_pro, restated: sort descending, cumulative sums."""
    scores, fp_change, pro_change = [], [], []
    n_regions = n_ok = 0
    for m, g in zip(maps, gts):
        lab, n = label_oracle(g)
        n_regions += n
        ok = lab == 0
        n_ok += int(ok.sum())
        pc = np.zeros(m.shape)
        for k in range(1, n + 1):
            pc[lab == k] = 1.0 / np.count_nonzero(lab == k)
        scores.append(m.ravel())
        fp_change.append(ok.ravel().astype(np.float64))
        pro_change.append(pc.ravel())
    s = np.concatenate(scores)
    order = np.argsort(s, kind="stable")[::-1]
    s = s[order]
    fprs = np.cumsum(np.concatenate(fp_change)[order]) / n_ok
    pros = np.cumsum(np.concatenate(pro_change)[order]) / n_regions
    keep = np.append(np.diff(s) != 0, True)
    fprs, pros = np.clip(fprs[keep], None, 1), np.clip(pros[keep], None, 1)
    return np.r_[0.0, fprs, 1.0], np.r_[0.0, pros, 1.0]


def trapezoid_oracle(x, y, limit):
    area = 0.0
    for i in range(len(x) - 1):
        x0, x1, y0, y1 = x[i], x[i + 1], y[i], y[i + 1]
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def au_pro_oracle(maps, gts, limit=0.05, curve=pro_curve_bruteforce):
    fpr, pro = curve(maps, gts)
    return trapezoid_oracle(fpr, pro, limit) / limit


def auroc_pairs(scores, labels):
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def f1_oracle(pred, gt):
    pred, gt = np.asarray(pred, bool).ravel(), np.asarray(gt, bool).ravel()
    tp = int(np.sum(pred & gt))
    fp = int(np.sum(pred & ~gt))
    fn = int(np.sum(~pred & gt))
    return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_max_oracle(scores, gt):
    s, g = np.ravel(scores), np.ravel(gt).astype(bool)
    return max(f1_oracle(s >= t, g) or 0.0 for t in np.unique(s))


def as_f16(m):
    """The scores the metrics see: float16-rounded, back as float64."""
    return np.asarray(m, np.float32).astype(np.float16).astype(np.float64)


def run_pixels(maps, gts, masks=None):
    pm = M.PixelMetrics()
    for i, (m, g) in enumerate(zip(maps, gts)):
        pm.add(g, m, None if masks is None else masks[i])
    return pm


# -- hand-computed cases --------------------------------------------------------------------------


def test_f1_score_hand():
    assert M.f1_score(0, 0, 0) is None
    assert M.f1_score(0, 5, 0) == 0.0
    assert M.f1_score(0, 0, 5) == 0.0
    assert M.f1_score(3, 1, 2) == pytest.approx(6 / 9)
    assert M.f1_score(7, 0, 0) == 1.0


def test_seg_f1_empty_ground_truth_and_prediction():
    pm = M.PixelMetrics()
    pm.add(np.zeros((4, 5), bool), np.zeros((4, 5), np.float32), np.zeros((4, 5), np.uint8))
    r = pm.result()
    assert r["seg_f1"]["value"] is None  # nothing to find, nothing found: undefined, not 1
    assert r["au_pro"]["value"] is None and r["pixel_auroc"]["value"] is None
    assert r["pixel_f1_max"]["value"] is None
    pred = np.zeros((4, 5), np.uint8)
    pred[0, 0] = 255
    pm.add(np.zeros((4, 5), bool), np.zeros((4, 5), np.float32), pred)
    assert pm.result()["seg_f1"]["value"] == 0.0  # a false positive on a defect-free split


def test_seg_f1_empty_prediction_and_one_pixel_region():
    gt = np.zeros((6, 6), bool)
    gt[2, 3] = True
    pm = M.PixelMetrics()
    st_ = pm.add(gt, None, np.zeros((6, 6), np.uint8))
    assert (st_.tp, st_.fp, st_.fn, st_.gt_regions, st_.regions_hit) == (0, 0, 1, 1, 0)
    assert pm.result()["seg_f1"]["value"] == 0.0
    pm = M.PixelMetrics()
    st_ = pm.add(gt, None, gt.astype(np.uint8) * 255)
    assert (st_.tp, st_.fp, st_.fn, st_.regions_hit) == (1, 0, 0, 1)
    assert pm.result()["seg_f1"]["value"] == 1.0


def test_seg_f1_sums_pixels_over_images():
    """Micro average: 2·ΣTP / (2·ΣTP + ΣFP + ΣFN), not the mean of per-image F1."""
    gt1 = np.zeros((10, 10), bool)
    gt1[:5] = True  # 50 px, all found
    gt2 = np.zeros((10, 10), bool)
    gt2[0, 0] = True  # 1 px, missed, 9 false positives
    p2 = np.zeros((10, 10), bool)
    p2[5, :9] = True
    pm = M.PixelMetrics()
    pm.add(gt1, None, gt1)
    pm.add(gt2, None, p2)
    r = pm.result()["seg_f1"]
    assert (r["tp"], r["fp"], r["fn"]) == (50, 9, 1)
    assert r["value"] == pytest.approx(100 / 110)
    assert r["images"] == 2 and r["regions"] == 2


def test_au_pro_one_pixel_region_found_first():
    gt = np.zeros((4, 4), bool)
    gt[1, 1] = True
    m = np.zeros((4, 4), np.float32)
    m[1, 1] = 1.0
    assert run_pixels([m], [gt]).au_pro() == pytest.approx(1.0)
    assert run_pixels([1 - m], [gt]).au_pro() == pytest.approx(0.0)


def test_au_pro_all_ties_is_the_diagonal():
    """One threshold: the curve is (0,0)→(1,1); ∫₀^L x dx / L = L/2."""
    gt = np.zeros((4, 4), bool)
    gt[0, 0] = True
    m = np.full((4, 4), 7.0, np.float32)
    pm = run_pixels([m], [gt])
    assert pm.au_pro(0.05) == pytest.approx(0.025)
    assert pm.au_pro(0.3) == pytest.approx(0.15)
    assert pm.result()["pixel_auroc"]["value"] == pytest.approx(0.5)


def test_au_pro_two_regions_hand_computed():
    """1×10 image, regions A = {0} and B = {5,6,7}; good pixels 1-4, 8, 9.

    scores: A 0.875; B 0.75, 0.75, 0.25; good 0.125 ×5 and 0.5 at pixel 8.
    Curve: (0,0) (0,½) (0,⅚) (⅙,⅚) (⅙,1) (1,1) (1,1).
    Area to 0.05: 0.05·⅚ → AucPro@0.05 = ⅚. Area to 0.3: ⅙·⅚ + (0.3 − ⅙)·1 → /0.3 = 0.907407…"""
    gt = np.zeros((1, 10), bool)
    gt[0, [0, 5, 6, 7]] = True
    m = np.array([[0.875, 0.125, 0.125, 0.125, 0.125, 0.75, 0.75, 0.25, 0.5, 0.125]], np.float32)
    pm = run_pixels([m], [gt])
    assert pm.regions == 2
    fpr, pro, thr = pm.pro_curve()
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 6, 1 / 6, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 5 / 6, 5 / 6, 1, 1, 1])
    np.testing.assert_allclose(thr[1:-1], [0.875, 0.75, 0.5, 0.25, 0.125])
    assert pm.au_pro(0.05) == pytest.approx(5 / 6)
    assert pm.au_pro(0.3) == pytest.approx((1 / 6 * 5 / 6 + (0.3 - 1 / 6)) / 0.3)


def test_regions_are_eight_connected():
    gt = np.zeros((5, 5), bool)
    gt[1, 1] = gt[2, 2] = True  # diagonal neighbours: one region
    gt[4, 4] = True
    pm = M.PixelMetrics()
    assert pm.add(gt, np.zeros((5, 5), np.float32), None).gt_regions == 2


def test_auroc_hand():
    assert M.auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert M.auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert M.auroc([1, 1], [0, 1]) == 0.5
    assert M.auroc([3, 1, 2, 2], [1, 0, 1, 0]) == pytest.approx(0.875)
    assert M.auroc([1, 2], [1, 1]) is None


def test_image_metrics_hand():
    im = M.ImageMetrics()
    for defective, score, fail in [(True, 9, True), (True, 3, False), (False, 5, True), (False, 1, False),
                                   (False, 2, False)]:
        im.add(defective, score, fail)
    r = im.result()
    c = r["class_f1"]
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (1, 1, 1, 2)
    assert r["class_f1"]["value"] == pytest.approx(0.5)
    assert r["image_auroc"]["value"] == pytest.approx(auroc_pairs([9, 3, 5, 1, 2], [1, 1, 0, 0, 0]))
    assert r["class_f1"]["images"] == 5 and r["class_f1"]["defective_images"] == 2


def test_trapezoid_limits():
    x, y = np.array([0, 0.1, 0.5, 1.0]), np.array([0, 0.5, 0.5, 1.0])
    assert M.trapezoid(x, y, 0.1) == pytest.approx(0.025)  # limit on a point
    assert M.trapezoid(x, y, 0.05) == pytest.approx(trapezoid_oracle(x, y, 0.05))
    assert M.trapezoid(x, y) == pytest.approx(trapezoid_oracle(x, y, 1.0))
    with pytest.raises(ValueError):
        M.trapezoid(x, y, 2.0)


# -- score keys and histograms --------------------------------------------------------------------


def test_score_keys_order_and_values():
    v = np.array([-np.inf, -65504, -3.5, -1e-7, -0.0, 0.0, 1e-7, 0.1, 1, 254.9, 255, 300, 65504, np.inf],
                 np.float32)
    k = M.score_keys(v).astype(np.int64)
    with np.errstate(over="ignore"):
        f16 = v.astype(np.float16).astype(np.float64)
    for i in range(len(v)):
        for j in range(len(v)):
            assert (k[i] < k[j]) == (f16[i] < f16[j]) and (k[i] == k[j]) == (f16[i] == f16[j]), (v[i], v[j])
    np.testing.assert_array_equal(M.key_values()[k], f16)
    assert k[4] == k[5] == 0x8000  # −0 and +0 share a key
    pos = np.array([0.0, 1.5, 255.0], np.float32)  # the non-negative fast path gives the same keys
    np.testing.assert_array_equal(M.score_keys(pos), M.score_keys(np.r_[pos, -1.0])[:3])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e5, 1e5, allow_nan=False, width=32), min_size=2, max_size=40))
def test_score_keys_monotone(values):
    v = np.array(values, np.float32)
    k = M.score_keys(v).astype(np.int64)
    with np.errstate(over="ignore"):
        f16 = v.astype(np.float16).astype(np.float64)
    order = np.argsort(k, kind="stable")
    assert np.all(f16[order][1:] >= f16[order][:-1])
    assert np.array_equal(M.key_values()[k], f16)


def test_key_histogram_exact(monkeypatch):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 1 << 16, (37, 53), dtype=np.uint16)
    keys[0, 0], keys[0, 1] = 0, 65535
    np.testing.assert_array_equal(M.key_histogram(keys), np.bincount(keys.ravel(), minlength=1 << 16))
    monkeypatch.setattr(M, "_CALC_HIST_MAX", 100)  # row chunks and the bincount path
    np.testing.assert_array_equal(M.key_histogram(keys), np.bincount(keys.ravel(), minlength=1 << 16))


# -- against the oracles ------------------------------------------------------------------------


def _random_case(rng, n_images, h, w, levels=None):
    maps, gts = [], []
    for i in range(n_images):
        g = np.zeros((h, w), np.uint8)
        if i % 3 != 2:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(0, h), rng.integers(0, w)
                cv2.ellipse(g, (int(cx), int(cy)), (int(rng.integers(0, 4)), int(rng.integers(0, 3))),
                            float(rng.uniform(0, 180)), 0, 360, 255, -1)
        m = rng.random((h, w)) * 100 + (g > 0) * rng.uniform(0, 60)
        if levels:
            m = np.floor(m / (160 / levels))
        maps.append(m.astype(np.float32))
        gts.append(g > 0)
    return maps, gts


@pytest.mark.parametrize("levels", [None, 12])
def test_pixel_metrics_match_oracles(levels):
    rng = np.random.default_rng(1 if levels is None else 2)
    maps, gts = _random_case(rng, 6, 23, 31, levels)
    masks = [(m > np.percentile(m, 85)).astype(np.uint8) * 255 for m in maps]
    pm = run_pixels(maps, gts, masks)
    r = pm.result(0.05)
    f16 = [as_f16(m) for m in maps]
    for limit in (0.05, 0.3, 1.0):
        want = au_pro_oracle(f16, gts, limit)
        assert pm.au_pro(limit) == pytest.approx(want, abs=1e-12)
        assert au_pro_oracle(f16, gts, limit, pro_curve_sorted) == pytest.approx(want, abs=1e-12)
    fpr, pro, _ = pm.pro_curve()
    fo, po = pro_curve_bruteforce(f16, gts)
    np.testing.assert_allclose(fpr, fo, atol=1e-12)
    np.testing.assert_allclose(pro, po, atol=1e-12)
    all_s = np.concatenate([m.ravel() for m in f16])
    all_g = np.concatenate([g.ravel() for g in gts])
    assert r["pixel_auroc"]["value"] == pytest.approx(auroc_pairs(all_s, all_g), abs=1e-12)
    assert r["pixel_f1_max"]["value"] == pytest.approx(f1_max_oracle(all_s, all_g), abs=1e-12)
    all_p = np.concatenate([(k > 0).ravel() for k in masks])
    assert r["seg_f1"]["value"] == pytest.approx(f1_oracle(all_p, all_g))
    assert r["seg_f1"]["regions"] == sum(label_oracle(g)[1] for g in gts)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(2, 9), st.integers(2, 9),
       st.sampled_from([None, 3, 8]))
def test_pixel_metrics_property(seed, n, h, w, levels):
    rng = np.random.default_rng(seed)
    maps, gts = _random_case(rng, n, h, w, levels)
    masks = [(rng.random((h, w)) < 0.3).astype(np.uint8) for _ in maps]
    pm = run_pixels(maps, gts, masks)
    r = pm.result()
    f16 = [as_f16(m) for m in maps]
    all_s = np.concatenate([m.ravel() for m in f16])
    all_g = np.concatenate([g.ravel() for g in gts])
    n_regions = sum(label_oracle(g)[1] for g in gts)
    if n_regions and (~all_g).any():
        assert r["au_pro"]["value"] == pytest.approx(au_pro_oracle(f16, gts, 0.05), abs=1e-12)
    else:
        assert r["au_pro"]["value"] is None
    want = auroc_pairs(all_s, all_g)
    assert (r["pixel_auroc"]["value"] is None) == (want is None)
    if want is not None:
        assert r["pixel_auroc"]["value"] == pytest.approx(want, abs=1e-12)
    want = f1_oracle(np.concatenate([(k > 0).ravel() for k in masks]), all_g)
    assert r["seg_f1"]["value"] == (None if want is None else pytest.approx(want))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.booleans()), min_size=1, max_size=30))
def test_image_metrics_property(rows):
    im = M.ImageMetrics()
    for d, s, f in rows:
        im.add(d, float(s), f)
    r = im.result()
    y = np.array([d for d, _, _ in rows])
    p = np.array([f for _, _, f in rows])
    assert r["class_f1"]["value"] == (None if f1_oracle(p, y) is None else pytest.approx(f1_oracle(p, y)))
    want = auroc_pairs([s for _, s, _ in rows], y)
    assert r["image_auroc"]["value"] == (None if want is None else pytest.approx(want))


def test_resizing_conventions():
    """Maps bilinear, masks nearest, to the ground truth's size — the same as cv2 does it here."""
    rng = np.random.default_rng(3)
    small = (rng.random((6, 8)) * 200).astype(np.float32)
    mask = (rng.random((6, 8)) > 0.7).astype(np.uint8) * 255
    gt = np.zeros((24, 32), bool)
    gt[5:9, 10:20] = True
    pm = M.PixelMetrics()
    pm.add(gt, small, mask)
    big = cv2.resize(small, (32, 24), interpolation=cv2.INTER_LINEAR)
    bigmask = cv2.resize(mask, (32, 24), interpolation=cv2.INTER_NEAREST) > 0
    assert pm.au_pro(0.3) == pytest.approx(au_pro_oracle([as_f16(big)], [gt], 0.3), abs=1e-12)
    assert pm.result()["seg_f1"]["value"] == pytest.approx(f1_oracle(bigmask, gt))


def test_float16_rounding_is_small_against_float32():
    """The float16 sweep against the exact float32 one on smooth maps: the difference is tiny."""
    rng = np.random.default_rng(5)
    maps, gts = [], []
    for _ in range(4):
        g = np.zeros((40, 48), np.uint8)
        cv2.circle(g, (int(rng.integers(8, 40)), int(rng.integers(8, 32))), 5, 255, -1)
        m = cv2.GaussianBlur(rng.random((40, 48)).astype(np.float32), (0, 0), 2) * 150 + (g > 0) * 60
        maps.append(m.astype(np.float32) + 40)
        gts.append(g > 0)
    pm = run_pixels(maps, gts)
    exact = au_pro_oracle([m.astype(np.float64) for m in maps], gts, 0.05, pro_curve_sorted)
    assert abs(pm.au_pro(0.05) - exact) < 5e-3


def test_negative_and_large_scores():
    """The rolling scope can leave 0..255; keys cover the whole float16 range."""
    gt = np.zeros((3, 4), bool)
    gt[0, :2] = True
    m = np.array([[900, 300, -5, -7], [-5, 0, 2, 1], [-1e-3, 0, 0, 3]], np.float32)
    pm = run_pixels([m], [gt])
    assert pm.au_pro(0.3) == pytest.approx(au_pro_oracle([as_f16(m)], [gt], 0.3), abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        M.PixelMetrics().add(gt, np.full((3, 4), np.nan, np.float32), None)

"""Morphology, level-set component counts, regions and verdict against straightforward
implementations; thread safety."""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.bundle import VerdictSpec
from sdk.postprocess.levelsets import ABSENT, compact_index, level_set_counts
from sdk.postprocess.morphology import apply_morphology, close_mask, fill_holes
from sdk.verdict import Region, decide, find_regions, roi_slices


def _fill_holes_oracle(mask: np.ndarray) -> np.ndarray:
    """Background pixels not 4-connected to the border become foreground (BFS by labelling)."""
    bg = (mask == 0).astype(np.uint8)
    n, lab = cv2.connectedComponents(bg, connectivity=4)
    border = set(lab[0]) | set(lab[-1]) | set(lab[:, 0]) | set(lab[:, -1])
    out = mask.copy()
    for i in range(1, n):
        if i not in border:
            out[lab == i] = 255
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 40), st.integers(3, 40))
def test_fill_holes_matches_oracle(seed, h, w):
    rng = np.random.default_rng(seed)
    mask = ((rng.random((h, w)) < 0.45) * 255).astype(np.uint8)
    assert np.array_equal(fill_holes(mask), _fill_holes_oracle(mask))


def test_ring_is_filled_and_closing_bridges_gaps():
    ring = np.zeros((30, 30), np.uint8)
    cv2.circle(ring, (15, 15), 9, 255, 2)
    filled = fill_holes(ring)
    assert filled[15, 15] == 255 and filled[0, 0] == 0
    gap = np.zeros((20, 20), np.uint8)
    gap[5:15, 5:9] = 255
    gap[5:15, 10:14] = 255  # one-pixel gap at column 9
    assert close_mask(gap, 3)[10, 9] == 255 and close_mask(gap, 0) is gap
    assert np.array_equal(apply_morphology(gap, 0, False), gap)


def _components_oracle(lvl: np.ndarray, n_levels: int) -> list[int]:
    return [cv2.connectedComponents((lvl <= j).astype(np.uint8), connectivity=8)[0] - 1
            for j in range(n_levels)]


def _euler_oracle(lvl: np.ndarray, n_levels: int) -> list[int]:
    """Components minus holes (bounded 4-connected pieces of the complement), level by level."""
    out = []
    for j in range(n_levels):
        s = (lvl <= j).astype(np.uint8)
        outside = np.pad(1 - s, 1, constant_values=1)
        out.append(cv2.connectedComponents(s, connectivity=8)[0] - 1
                   - (cv2.connectedComponents(outside, connectivity=4)[0] - 2))
    return out


def _level_image(rng: np.random.Generator, h: int, w: int, n_levels: int, erode: int) -> np.ndarray:
    """A random level image; with ``erode`` k > 1, the level image of a map eroded by a k×k box."""
    kind = rng.integers(0, 3)
    if kind == 0:  # white noise
        lvl = rng.integers(0, n_levels, (h, w)).astype(np.uint8)
    elif kind == 1:  # blurred noise: bands of levels
        m = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 4)))
        lvl = ((m - m.min()) / (np.ptp(m) + 1e-9) * (n_levels - 1)).astype(np.uint8)
    else:  # nested rings: holes that open and close from level to level
        lvl = np.full((h, w), n_levels - 1, np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            for r in range(int(rng.integers(3, 25)), 0, -int(rng.integers(1, 5))):
                cv2.circle(lvl, c, r, int(rng.integers(0, n_levels)), int(rng.choice([-1, 1, 3, 8])))
    lvl[rng.random((h, w)) < rng.uniform(0, 0.6)] = ABSENT
    if erode > 1:  # {lvl <= j} eroded by the box = {max over the box <= j}
        lvl = cv2.dilate(lvl, np.ones((erode, erode), np.uint8))
    return lvl


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 80), st.integers(1, 80),
       st.sampled_from([1, 4, 16, 64, 200, 255]), st.integers(1, 8))
def test_level_set_counts_match_oracle(seed, h, w, n_levels, erode):
    """Any level image, and level images of eroded maps; values >= n_levels are absent."""
    rng = np.random.default_rng(seed)
    lvl = _level_image(rng, h, w, n_levels, erode)
    assert level_set_counts(lvl, n_levels).tolist() == _components_oracle(lvl, n_levels)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 60), st.sampled_from([1, 16, 64]))
def test_level_set_counts_through_a_table(seed, h, w, n_levels):
    """uint16 values read through a level table count like the level image the table makes."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 1 << 16, (h, w)).astype(np.uint16)
    values[rng.random((h, w)) < 0.3] = 7  # flat stretches
    lut = rng.integers(0, n_levels + 3, 1 << 16).astype(np.uint8)  # some values never present
    lut[lut >= n_levels] = ABSENT
    assert level_set_counts(values, n_levels, lut).tolist() == _components_oracle(lut[values], n_levels)
    with pytest.raises(ValueError):
        level_set_counts(values, n_levels, lut[:256])


def test_level_set_counts_of_degenerate_images():
    for lvl in (np.full((7, 9), ABSENT, np.uint8), np.zeros((7, 9), np.uint8), np.zeros((1, 1), np.uint8),
                np.full((1, 40), 3, np.uint8), np.full((40, 1), 3, np.uint8)):
        assert level_set_counts(lvl, 64).tolist() == _components_oracle(lvl, 64)
    assert level_set_counts(np.zeros((0, 5), np.uint8), 64).tolist() == [0] * 64  # (OpenCV crashes on it)
    checker = (np.indices((30, 30)).sum(axis=0) % 2).astype(np.uint8)  # diagonal neighbours only
    assert level_set_counts(checker, 2).tolist() == _components_oracle(checker, 2) == [1, 1]
    with pytest.raises(ValueError):
        level_set_counts(np.zeros((3, 3), np.uint8), 256)
    with pytest.raises(ValueError):
        level_set_counts(np.zeros(9, np.uint8), 64)


def test_level_set_counts_of_a_spiral_and_combs():
    """Long thin components that merge late (deep union-find trees) and many merges at one level."""
    lvl = np.full((61, 61), ABSENT, np.uint8)
    y = x = 30
    d = 0
    for step in range(1, 60):  # a square spiral drawn at increasing levels
        for _ in range(2):
            dy, dx = ((0, 1), (1, 0), (0, -1), (-1, 0))[d % 4]
            for _ in range(step):
                if 0 <= y < 61 and 0 <= x < 61:
                    lvl[y, x] = min(step, 62)
                y, x = y + dy, x + dx
            d += 1
    comb = np.full((40, 81), ABSENT, np.uint8)
    comb[:, ::2] = 0
    comb[20, 1::2] = 5  # one row joins the 41 teeth at level 5
    for img, n in ((lvl, 64), (comb, 8)):
        assert level_set_counts(img, n).tolist() == _components_oracle(img, n)
    assert level_set_counts(comb, 8).tolist() == [41] * 5 + [1] * 3


def test_level_set_counts_of_rings_with_holes():
    """Eroded annuli: holes appear and close; the components are counted through them."""
    m = np.zeros((120, 160), np.float32)
    for (cx, cy), r, v in [((40, 40), 30, 200.0), ((110, 70), 35, 150.0), ((110, 70), 20, 230.0)]:
        cv2.circle(m, (cx, cy), r, v, 12)
    m = cv2.GaussianBlur(m, (0, 0), 2.0)
    lvl = np.where(m > 3, np.clip((255 - m) // 4, 0, 63), ABSENT).astype(np.uint8)
    lvl = cv2.dilate(lvl, np.ones((6, 6), np.uint8))
    counts = level_set_counts(lvl, 64)
    assert counts.tolist() == _components_oracle(lvl, 64)
    assert (np.array(_euler_oracle(lvl, 64)) < counts).any()  # there really were holes


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 60))
def test_compact_index_keeps_components(seed, h, w):
    rng = np.random.default_rng(seed)
    lvl = _level_image(rng, h, w, 16, 1)
    lvl[:, rng.random(w) < 0.4] = ABSENT  # empty columns and rows, alone and in runs
    lvl[rng.random(h) < 0.4] = ABSENT
    idx = compact_index(np.less(lvl, 16).view(np.uint8))
    if idx is None:
        assert not (lvl < 16).any()
        return
    small = lvl[idx]
    assert small.size <= lvl.size and _components_oracle(small, 16) == _components_oracle(lvl, 16)


def _regions_oracle(mask, amap, scale):
    n, lab = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, n):
        ys, xs = np.nonzero(lab == i)
        vals = amap[ys, xs].astype(np.float64)
        out.append(((math.floor(xs.min() / scale), math.floor(ys.min() / scale),
                     math.ceil((xs.max() + 1) / scale), math.ceil((ys.max() + 1) / scale)),
                    round(len(ys) / scale**2), vals.max(), vals.mean()))
    return sorted(out, key=lambda r: -r[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_regions_match_oracle(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 60, 2)
    mask = ((cv2.GaussianBlur(rng.random((h, w)), (0, 0), 1.5) > 0.55) * 255).astype(np.uint8)
    amap = (rng.random((h, w)) * 255).astype(np.float32)
    got = find_regions(mask, amap, 0.25, (h * 4, w * 4))
    want = _regions_oracle(mask, amap, 0.25)
    assert sorted((r.bbox, r.area_px) for r in got) == sorted((b, a) for b, a, _, _ in want)
    for r in got:
        match = [x for x in want if x[0] == r.bbox and x[1] == r.area_px]
        assert any(np.isclose(r.max, x[2]) and np.isclose(r.mean, x[3]) for x in match)


def test_one_pixel_region_and_frame_clipping():
    mask = np.zeros((10, 10), np.uint8)
    mask[9, 9] = 255
    amap = np.zeros((10, 10), np.float32)
    amap[9, 9] = 77.0
    (r,) = find_regions(mask, amap, 0.25, (38, 39))  # frame not a multiple of 4: bbox clipped
    assert r == Region((36, 36, 39, 38), 16, 77.0, 77.0)
    assert find_regions(np.zeros((4, 4), np.uint8), amap[:4, :4], 0.25, (16, 16)) == []


def test_decide_rules():
    small = Region((0, 0, 4, 4), 16, 200.0, 150.0)
    assert decide([small], 10.0, VerdictSpec(min_area_px=0))[0] == "fail"
    assert decide([small], 10.0, VerdictSpec(min_area_px=17))[0] == "pass"
    assert decide([], 10.0, VerdictSpec(score_threshold=10.0))[0] == "fail"
    assert decide([], 9.9, VerdictSpec(score_threshold=10.0))[0] == "pass"
    assert roi_slices((4, 8, 17, 20), 0.25, (100, 100)) == (slice(2, 5), slice(1, 5))


def test_inspector_is_thread_safe(make_bundle):
    from sdk import Inspector

    bundle = make_bundle()
    insp = Inspector(bundle, backend="ort-cpu", scope="rolling", rolling_window=8)
    rng = np.random.default_rng(0)
    frames = [(rng.random((150, 130)) * 255).astype(np.uint8) for _ in range(6)]
    errors: list[BaseException] = []

    def work():
        try:
            for f in frames:
                res = insp.inspect(f)
                assert res.mask.shape == res.anomaly_map.shape
        except BaseException as exc:  # noqa: BLE001 - collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(insp._rolling) == 8


@pytest.mark.parametrize("closing,holes", [(5, True), (0, True), (7, False)])
def test_morphology_from_bundle(make_bundle, closing, holes):
    from sdk import Inspector
    from sdk.postprocess.stats import BinStats, Calibration, NormStats

    bundle = make_bundle(name=f"m{closing}{holes}")
    bundle._raw["postprocess"]["morphology"] = {"closing": closing, "fill_holes": holes}
    bundle.set_calibration(Calibration(NormStats(-3.0, 3.0), BinStats(100.0, 200.0, 0.5, 0.01), 1))
    frame = np.full((128, 128), 20, np.uint8)
    cv2.circle(frame, (64, 64), 44, 250, 36)  # ring 9 map px thick survives the 6×6 erosion
    res = Inspector(bundle, backend="ort-cpu").inspect(frame)
    assert res.mask[16, 16] == (255 if holes else 0)

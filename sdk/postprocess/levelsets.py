"""Counts of 8-connected components of nested level sets, for every level at once.

A *level image* gives each pixel the first level at which it is present (0..n-1; 255: never);
the set of level ``j`` is ``{lvl <= j}``. Components = Euler number + holes, exactly:

- the Euler number of every level comes from one pass over the 2×2 windows (bit quads), however
  the components spread over the levels;
- a component with a hole at some level must be large: its bounding box at least ``hole_side`` in
  both directions and at least ``4 * (hole_side - 2)`` pixels. For any set ``hole_side`` is 3; for
  sets eroded by a k×k box (MEBin's) every hole holds a k×k box, so ``hole_side`` is k + 2;
- only such components of the largest set whose filled shape holds that box with its ring are
  labelled, side by side in a mosaic, and only at levels where one of those boxes can be a hole.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

ABSENT = 255
_MAX_ANCHORS = 50_000


def euler_counts(lvl: np.ndarray, n_levels: int) -> np.ndarray:
    """Euler number (8-connectivity: components minus holes) of ``{lvl <= j}`` for every level j.

    Gray's bit-quad formula, E = (Q1 - Q3 - 2 QD) / 4, over every 2×2 window, by the order in
    which the window's four pixels enter: +1 when the first enters, -1 for the second and the
    third, +1 for the fourth, and -2 / +2 more at the second / third when the first two are
    diagonal. Since every pixel is in four windows, the second and third need no sorting.
    """
    lvl = np.ascontiguousarray(lvl, np.uint8)
    h, w = lvl.shape
    # Absent pixels get varied values >= n_levels: histograms of one repeated value are slow.
    spread = _spread(h + 2, w + 2, n_levels)
    p = cv2.min(cv2.copyMakeBorder(lvl, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=ABSENT), spread)
    v00, v01, v10, v11 = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
    n1, m1 = cv2.min(v00, v11), cv2.max(v00, v11)
    n2, m2 = cv2.min(v01, v10), cv2.max(v01, v10)
    twice = _hist(cv2.min(n1, n2), n_levels) + _hist(cv2.max(m1, m2), n_levels) - 2 * _hist(p, n_levels)
    first1 = cv2.compare(m1, n2, cv2.CMP_LT)  # 255 where v00, v11 come first
    first2 = cv2.compare(m2, n1, cv2.CMP_LT)  # 255 where v01, v10 come first
    if cv2.countNonZero(cv2.bitwise_or(first1, first2)):  # windows meeting only at a corner
        not1, not2, s = cv2.bitwise_not(first1), cv2.bitwise_not(first2), spread[:-1, :-1]
        second = cv2.min(cv2.min(cv2.bitwise_or(m1, not1), cv2.bitwise_or(m2, not2)), s)
        third = cv2.min(cv2.min(cv2.bitwise_or(n2, not1), cv2.bitwise_or(n1, not2)), s)
        twice += _hist(third, n_levels) - _hist(second, n_levels)
    return np.cumsum(twice) // 2


def _spread(h: int, w: int, n_levels: int) -> np.ndarray:
    """An h×w image of varied values >= n_levels (a view of a cached, periodic pattern)."""
    base = _spread_base(max(n_levels, 128))
    if base.shape[0] < h or base.shape[1] < w:
        _spread_base.cache_clear()
        base = _spread_base(max(n_levels, 128), max(h, base.shape[0]), max(w, base.shape[1]))
    return base[:h, :w]


@functools.lru_cache(maxsize=4)
def _spread_base(lo: int, h: int = 1026, w: int = 1026) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    out = (lo + (5 * xx + 3 * yy) % (256 - lo)).astype(np.uint8)
    out.setflags(write=False)
    return out


def _hist(x: np.ndarray, n_levels: int) -> np.ndarray:
    """Pixels per level (levels 0..n_levels-1; other values ignored)."""
    return cv2.calcHist([x], [0], None, [256], [0, 256])[:n_levels].ravel().astype(np.int64)


def level_set_counts(lvl: np.ndarray, n_levels: int, hole_side: int = 3) -> np.ndarray:
    """Number of 8-connected components of ``{lvl <= j}`` for every level j (int64, length n_levels).

    ``lvl``: uint8 level image, ABSENT (255) for pixels never present. ``hole_side``: smallest
    bounding-box side of a component that can have a hole (3 for any image; k + 2 when every set is
    eroded by a k×k box). A wrong, larger ``hole_side`` gives wrong counts.

    Components = Euler number + holes. Holes can only be in the large components of the largest
    set; those are copied side by side into a mosaic (one pixel apart) and labelled there, once
    per level where their pixels enter.
    """
    lvl = np.ascontiguousarray(lvl, np.uint8)
    euler = euler_counts(lvl, n_levels)
    present = np.less(lvl, n_levels).view(np.uint8)
    labels, stats = _labels_and_stats(present)
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    big = (w >= hole_side) & (h >= hole_side) & (area >= 4 * (hole_side - 2))  # room for a hole
    if not big.any():
        return euler
    top_holes = stats.shape[0] - 1 - int(euler[-1])  # holes of the largest set
    anchors = _hole_anchors(present, hole_side, top_holes > 0)
    if anchors is None:
        return euler
    # ... and a place for one inside its filled shape.
    sums = cv2.integral(anchors)
    big &= sums[y + h, x + w] - sums[y, x + w] - sums[y + h, x] + sums[y, x] > 0
    if not big.any():
        return euler
    mosaic = _mosaic(lvl, labels, stats, np.flatnonzero(big) + 1)
    maybe = _hole_levels(mosaic, hole_side, n_levels, top_holes > 0)
    return euler if maybe is None else euler + _hole_counts(mosaic, n_levels, maybe)


def _labels_and_stats(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected labels and statistics; 16-bit labels (3x faster in OpenCV) unless they overflow."""
    try:
        return cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_16U)[1:3]
    except cv2.error:  # more than 65535 (provisional) labels
        return cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)[1:3]


def _hole_levels(lvl: np.ndarray, hole_side: int, n_levels: int, top_holes: bool) -> np.ndarray | None:
    """The levels at which a level set could have a hole (bool per level), or None if none.

    A hole h of a level set j holds a k×k box P (k = hole_side - 2) whose pixels are all absent
    at level j; P and its 4-neighbour ring lie in the filled largest set; and going left, right,
    up or down from P along a straight line one meets a pixel present at level j (the end of h).
    Each place of P thus allows holes only from the level of the latest of those four first
    pixels to just before P's first pixel enters.
    """
    anchors = _hole_anchors(np.less(lvl, n_levels).view(np.uint8), hole_side, top_holes)
    if anchors is None:
        return None
    k = hole_side - 2
    if cv2.countNonZero(anchors) > _MAX_ANCHORS:  # a huge set: the bounds would cost more than they save
        return np.ones(n_levels, bool)
    ys, xs = np.nonzero(anchors)  # P's top-left corners
    first_in_box = cv2.erode(lvl, np.ones((k, k), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT,
                             borderValue=ABSENT)[ys, xs]
    left = np.minimum.accumulate(lvl, axis=1)[ys, xs - 1]
    right = np.minimum.accumulate(lvl[:, ::-1], axis=1)[:, ::-1][ys, xs + k]
    up = np.minimum.accumulate(lvl, axis=0)[ys - 1, xs]
    down = np.minimum.accumulate(lvl[::-1], axis=0)[::-1][ys + k, xs]
    start = np.maximum(np.maximum(left, right), np.maximum(up, down)).astype(np.int64)
    stop = np.minimum(first_in_box.astype(np.int64), n_levels)  # exclusive
    ok = start < stop
    if not ok.any():
        return None
    marks = np.bincount(start[ok], minlength=n_levels + 1) - np.bincount(stop[ok], minlength=n_levels + 1)
    return np.cumsum(marks)[:n_levels] > 0


def _hole_anchors(present: np.ndarray, hole_side: int, top_holes: bool = True) -> np.ndarray | None:
    """0/1 image of the places (top-left corners of a k×k box P, k = hole_side - 2) where P and its
    4-neighbour ring fit in the filled set (holes filled; ``top_holes``: whether it has any), or
    None if nowhere. Every hole of every subset of the set holds such a box."""
    k = hole_side - 2
    filled = present * np.uint8(255)
    if top_holes:
        outside = cv2.copyMakeBorder(cv2.bitwise_not(filled), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
        cv2.floodFill(outside, None, (0, 0), 0, flags=4)  # what stays 255 is a hole
        filled = cv2.bitwise_or(filled, outside[1:-1, 1:-1])
    # P with its ring is the union of a k×(k+2) and a (k+2)×k rectangle: erode by both, keep the
    # common pixels (each kernel anchored at P's top-left corner).
    wide = cv2.erode(filled, np.ones((k, k + 2), np.uint8), anchor=(1, 0), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)
    tall = cv2.erode(filled, np.ones((k + 2, k), np.uint8), anchor=(0, 1), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)
    anchors = cv2.bitwise_and(wide, tall)
    return (anchors & np.uint8(1)) if cv2.countNonZero(anchors) else None


def _mosaic(lvl: np.ndarray, labels: np.ndarray, stats: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """The components ``comps`` (their levels, ABSENT elsewhere) on shelves, one pixel apart."""
    if comps.size == 1:
        x, y, w, h = stats[comps[0], :4]
        own = labels[y:y + h, x:x + w] == comps[0]
        return np.where(own, lvl[y:y + h, x:x + w], np.uint8(ABSENT))
    order = comps[np.argsort(-stats[comps, 3], kind="stable")]
    width = max(int(stats[comps, 2].max()),
                int(np.sqrt(((stats[comps, 2] + 1) * (stats[comps, 3] + 1)).sum())))
    places, ox, oy, shelf = [], 0, 0, 0
    for c in order:
        cw, ch = int(stats[c, 2]), int(stats[c, 3])
        if ox + cw > width:
            ox, oy, shelf = 0, oy + shelf + 1, 0
        places.append((c, ox, oy))
        ox, shelf = ox + cw + 1, max(shelf, ch)
    out = np.full((oy + shelf, width), ABSENT, np.uint8)
    for c, ox, oy in places:
        x, y, w, h = stats[c, :4]
        own = labels[y:y + h, x:x + w] == c
        out[oy:oy + h, ox:ox + w][own] = lvl[y:y + h, x:x + w][own]
    return out


def _hole_counts(lvl: np.ndarray, n_levels: int, maybe: np.ndarray) -> np.ndarray:
    """Holes (components minus Euler number) of ``{lvl <= j}`` at every level: labelled at the
    levels in ``maybe`` where pixels enter; elsewhere none, or as many as at the level before."""
    entering = _hist(cv2.min(lvl, _spread(*lvl.shape, n_levels)), n_levels) > 0
    todo = np.flatnonzero(maybe & entering)
    holes = np.zeros(n_levels, np.int64)
    if todo.size:
        euler = euler_counts(lvl, n_levels)
        for j in todo:
            labelled = cv2.connectedComponents(np.less_equal(lvl, j).view(np.uint8), connectivity=8)[0] - 1
            holes[j] = labelled - euler[j]
    for j in range(1, n_levels):  # no pixel enters: the same set, the same holes
        if maybe[j] and not entering[j]:
            holes[j] = holes[j - 1]
    return holes


def compact_index(present: np.ndarray) -> tuple | None:
    """Index of the smallest image with the same components as the nonzero pixels of ``present``:
    the bounding box, with every run of empty rows (columns) reduced to one. A component's rows
    and columns are contiguous, so sizes, bounding boxes and 2×2 windows are unchanged. None if empty.
    """
    rows, cols = present.max(axis=1) > 0, present.max(axis=0) > 0
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    if r.size == 0:
        return None
    ri, ci = _axis_index(rows, r[0], r[-1]), _axis_index(cols, c[0], c[-1])
    return np.ix_(ri, ci) if isinstance(ri, np.ndarray) and isinstance(ci, np.ndarray) else (ri, ci)


def _axis_index(used: np.ndarray, first: int, last: int) -> slice | np.ndarray:
    keep = used[first:last + 1].copy()
    keep[1:] |= used[first:last]  # the first empty line of each run stays
    if keep.all():
        return slice(first, last + 1)
    return np.flatnonzero(keep) + first

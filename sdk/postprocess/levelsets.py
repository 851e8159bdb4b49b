"""Counts of 8-connected components of nested level sets, for every level at once.

A *level image* gives each pixel the first level at which it is present (0..n-1; ABSENT or any
value >= n: never); the set of level ``j`` is ``{lvl <= j}``. The pixels enter a union-find forest
(disjoint sets) in order of their level: the number of components at level j is the number of
pixels present at j minus the merges made among them. The time is linear in the pixels, however
the components are spread over the levels.

The pass is compiled by numba on first use and cached on disk (:func:`compile_counts` does it
ahead of the first map, e.g. when a service starts).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

ABSENT = 255


def _jit(fn):
    """numba-compiled ``fn``, releasing the GIL; cached on disk where a cache folder is writable."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location: compile in memory each process
        return numba.njit(nogil=True)(fn)


def _neighbour_groups() -> np.ndarray:
    """For each of the 256 presence patterns of a pixel's 8 neighbours (bit i: neighbour i in the
    order N, NE, E, SE, S, SW, W, NW), one neighbour of each 8-connected group of present
    neighbours: ``table[m, 0]`` groups, their bit numbers in ``table[m, 1:]``.

    Neighbours next to each other in that cycle touch, and so do two edge neighbours around a
    corner (N and E): the groups are runs of the cycle that only an absent edge neighbour breaks.
    """
    table = np.zeros((256, 5), np.int8)
    edges, corners = (0, 2, 4, 6), (1, 3, 5, 7)
    for m in range(256):
        on = [bool(m >> b & 1) for b in range(8)]
        reps = [b for b in edges if on[b] and not on[(b - 2) % 8]]  # first edge neighbour of a run
        if not reps and all(on[b] for b in edges):
            reps = [0]
        reps += [c for c in corners if on[c] and not on[c - 1] and not on[(c + 1) % 8]]  # lone corners
        table[m, 0] = len(reps)
        table[m, 1:1 + len(reps)] = reps
    table.setflags(write=False)
    return table


_GROUPS = _neighbour_groups()


@_jit
def _find(parent, p):
    """Root of p's tree, halving the path on the way."""
    while parent[p] != p:
        up = parent[parent[p]]
        parent[p] = up
        p = up
    return p


@_jit
def _count_pass(values, lut, n_levels, groups):
    """Components of ``{lut[values] <= j}`` for j < n_levels (see the module's docstring).

    Pixels enter by level, and within a level in raster order. Which neighbours a pixel finds
    present when it enters is known beforehand (a lower level, or the same level earlier in raster
    order), so one raster pass settles every pixel with one group of such neighbours or none: it
    starts a component or joins that group's (linked to the neighbour's parent, which keeps the
    trees flat). Only pixels between two or more groups go through the union-find, by level.
    """
    h, w = values.shape
    ww = w + 2  # a border of absent pixels: every pixel has 8 neighbours in the buffer
    img = np.full((h + 2) * ww, 255, np.uint8)
    for y in range(h):
        row = img[(y + 1) * ww + 1:(y + 1) * ww + 1 + w]
        for x in range(w):
            v = lut[values[y, x]]
            row[x] = v if v < n_levels else 255
    n = img.size - 2 * ww - 2  # buffer positions ww + 1 ... that have all 8 neighbours
    v_, n_, ne, e_ = img[ww + 1:ww + 1 + n], img[1:1 + n], img[2:2 + n], img[ww + 2:ww + 2 + n]
    se, s_, sw, w_, nw = img[2 * ww + 2:], img[2 * ww + 1:], img[2 * ww:], img[ww:], img[:n]
    before = np.empty(n, np.uint8)  # bit i: neighbour i (N, NE, E, SE, S, SW, W, NW) entered earlier
    for i in range(n):
        v = v_[i]
        before[i] = (np.uint8(n_[i] <= v) | (np.uint8(ne[i] <= v) << 1) | (np.uint8(e_[i] < v) << 2)
                     | (np.uint8(se[i] < v) << 3) | (np.uint8(s_[i] < v) << 4) | (np.uint8(sw[i] < v) << 5)
                     | (np.uint8(w_[i] <= v) << 6) | (np.uint8(nw[i] <= v) << 7))
    step = np.array([-ww, -ww + 1, 1, ww + 1, ww, ww - 1, -1, -ww - 1], np.int64)
    parent = np.empty(img.size, np.int32)
    change = np.zeros(n_levels, np.int64)
    starts = np.zeros(n_levels + 1, np.int64)  # pixels between groups, counted by level
    for i in range(n):
        v = v_[i]
        if v == 255:
            continue
        p = i + ww + 1
        k = groups[before[i], 0]
        if k == 0:
            parent[p] = p
            change[v] += 1
            continue
        q = p + step[groups[before[i], 1]]
        parent[p] = parent[q] if q < p else q  # q < p: settled already
        if k > 1:
            starts[v + 1] += 1
    starts = np.cumsum(starts)
    todo = np.empty(starts[-1], np.int64)  # (position << 8) | neighbour bits, by level
    fill = starts[:-1].copy()
    for i in range(n):
        v = v_[i]
        if v != 255 and groups[before[i], 0] > 1:
            todo[fill[v]] = ((i + ww + 1) << 8) | before[i]
            fill[v] += 1
    for v in range(n_levels):
        merges = 0
        for t in todo[starts[v]:starts[v + 1]]:
            p, m = t >> 8, t & 255
            root = _find(parent, p)
            for r in range(2, groups[m, 0] + 1):
                other = _find(parent, p + step[groups[m, r]])
                if other != root:
                    merges += 1
                    if other < root:
                        parent[root] = other
                        root = other
                    else:
                        parent[other] = root
        change[v] -= merges
    return np.cumsum(change)


_IDENTITY = np.arange(256, dtype=np.uint8)


def level_set_counts(lvl: np.ndarray, n_levels: int, lut: np.ndarray | None = None) -> np.ndarray:
    """Number of 8-connected components of ``{lvl <= j}`` for every level j (int64, length n_levels).

    ``lvl``: uint8 level image; pixels with a value >= n_levels (ABSENT) are never present. With
    ``lut`` (uint8, one level per value), ``lvl`` is a uint16 image whose levels are ``lut[lvl]``,
    read straight from e.g. a map's order keys, with no level image in between.
    """
    if not 1 <= n_levels <= 255:
        raise ValueError(f"n_levels must be in 1..255, got {n_levels}")
    if lut is None:
        lvl, lut = np.ascontiguousarray(lvl, np.uint8), _IDENTITY
    else:
        lvl, lut = np.ascontiguousarray(lvl, np.uint16), np.ascontiguousarray(lut, np.uint8)
        if lut.shape != (1 << 16,):
            raise ValueError(f"a level table has one entry per uint16 value, got shape {lut.shape}")
    if lvl.ndim != 2:
        raise ValueError(f"a level image is 2-D, got shape {lvl.shape}")
    if lvl.size == 0:
        return np.zeros(n_levels, np.int64)
    return _count_pass(lvl, lut, n_levels, _GROUPS)


@functools.cache
def compile_counts() -> None:
    """Compile (or load from the disk cache) the counting pass now rather than on the first map;
    once per process (later calls return at once)."""
    level_set_counts(np.zeros((1, 1), np.uint8), 1)
    level_set_counts(np.zeros((1, 1), np.uint16), 1, np.zeros(1 << 16, np.uint8))


def compact_index(present: np.ndarray) -> tuple | None:
    """Index of the smallest image with the same components as the nonzero pixels of ``present``:
    the bounding box, with every run of empty rows (columns) reduced to one. A component's rows
    and columns are contiguous, so the components and their sizes are unchanged. None if empty.
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

"""Counts of 8-connected components of nested level sets, for every level at once.

A *level image* gives each pixel the first level at which it is present (0..n-1; ABSENT or any
value >= n: never); the set of level ``j`` is ``{lvl <= j}``. One pass adds the pixels in order of
their level to a union-find forest (disjoint sets): the number of components at level j is the
number of pixels present at j minus the merges made among them. The time is linear in the pixels,
however the components are spread over the levels.

The pass is compiled by numba on first use and cached on disk (:func:`compile_counts` does it
ahead of the first map, e.g. when a service starts).
"""

from __future__ import annotations

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
def _count_pass(lvl, n_levels, groups):
    """Components of ``{lvl <= j}`` for j < n_levels (see the module's docstring)."""
    h, w = lvl.shape
    ww = w + 2  # a border of absent pixels: no bounds checks
    present = np.zeros((h + 2) * ww, np.uint8)
    parent = np.empty((h + 2) * ww, np.int32)
    starts = np.zeros(n_levels + 1, np.int64)  # pixels sorted by level (counting sort, raster order)
    for y in range(h):
        for x in range(w):
            if lvl[y, x] < n_levels:
                starts[lvl[y, x] + 1] += 1
    starts = np.cumsum(starts)
    order = np.empty(starts[-1], np.int64)
    fill = starts[:-1].copy()
    for y in range(h):
        for x in range(w):
            v = lvl[y, x]
            if v < n_levels:
                order[fill[v]] = (y + 1) * ww + x + 1
                fill[v] += 1
    step = np.array([-ww, -ww + 1, 1, ww + 1, ww, ww - 1, -1, -ww - 1], np.int64)
    change = np.zeros(n_levels, np.int64)
    for v in range(n_levels):
        d = 0
        for i in range(starts[v], starts[v + 1]):
            p = order[i]
            m = (present[p - ww] | (present[p - ww + 1] << 1) | (present[p + 1] << 2)
                 | (present[p + ww + 1] << 3) | (present[p + ww] << 4) | (present[p + ww - 1] << 5)
                 | (present[p - 1] << 6) | (present[p - ww - 1] << 7))
            present[p] = 1
            k = groups[m, 0]
            if k == 0:  # a new component
                parent[p] = p
                d += 1
                continue
            parent[p] = p + step[groups[m, 1]]  # joins its neighbours' component
            if k == 1:
                continue
            root = _find(parent, p)
            for r in range(2, k + 1):  # the other groups: a merge each when in another component
                other = _find(parent, p + step[groups[m, r]])
                if other != root:
                    d -= 1
                    if other < root:
                        parent[root] = other
                        root = other
                    else:
                        parent[other] = root
        change[v] = d
    return np.cumsum(change)



def level_set_counts(lvl: np.ndarray, n_levels: int) -> np.ndarray:
    """Number of 8-connected components of ``{lvl <= j}`` for every level j (int64, length n_levels).

    ``lvl``: uint8 level image; pixels with a value >= n_levels (ABSENT) are never present.
    """
    if not 1 <= n_levels <= 255:
        raise ValueError(f"n_levels must be in 1..255, got {n_levels}")
    lvl = np.ascontiguousarray(lvl, np.uint8)
    if lvl.ndim != 2:
        raise ValueError(f"a level image is 2-D, got shape {lvl.shape}")
    if lvl.size == 0:
        return np.zeros(n_levels, np.int64)
    return _count_pass(lvl, n_levels, _GROUPS)


def compile_counts() -> None:
    """Compile (or load from the disk cache) the counting pass now rather than on the first map."""
    level_set_counts(np.zeros((1, 1), np.uint8), 1)


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

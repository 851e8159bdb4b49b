"""Swin-Cropping geometry: stateless tiling plans and the merge of per-tile maps.

RoBiS arithmetic: ``step = int(window * (1 - overlap))``, ``n = ceil((D - window) / step) + 1``
tiles per axis, tile ``i`` at ``i * step``, zero padding at the bottom/right. A frame smaller
than the window gets one padded tile.

Merging places every tile map at its exact position at the requested scale. Where
``origin * scale`` is not an integer (921 / 4 = 230.25 at RoBiS' quarter resolution) the tile
map is sampled bilinearly at that sub-pixel offset, so there is no cumulative drift (the
reference merges with a 230-pixel quarter-resolution step, see docs/geometry.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from .errors import InputError


def tile_origins(size: int, window: int, step: int) -> tuple[int, ...]:
    """Origins of the tiles along one axis of length ``size`` (RoBiS arithmetic)."""
    if size <= window:
        return (0,)
    n = math.ceil((size - window) / step) + 1
    return tuple(i * step for i in range(n))


MAX_FRAME_PIXELS = 256_000_000  # parse_frame_size: larger stated sizes are typing errors


def parse_frame_size(text: str) -> tuple[int, int]:
    """A frame size as cameras state it, ``"WIDTHxHEIGHT"`` (``x``, ``X`` or ``×``, spaces allowed:
    ``"2448x2048"``, ``" 1432 X 972 "``), → (height, width), the order of array shapes."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise InputError(f"frame size must be WIDTHxHEIGHT, e.g. 2448x2048 (got {text!r})")
    w, h = int(m.group(1)), int(m.group(2))
    if w * h > MAX_FRAME_PIXELS:
        raise InputError(f"frame size {w}x{h} is {w * h / 1e6:.0f} megapixels, more than a camera frame "
                         f"can be here ({MAX_FRAME_PIXELS // 1_000_000} megapixels)")
    return h, w


@dataclass(frozen=True)
class _AxisSampling:
    """Where each tile's map is sampled along one axis of the merged map."""

    starts: tuple[int, ...]  # first merged-map index covered by tile i
    stops: tuple[int, ...]  # one past the last index covered by tile i
    lo: tuple[np.ndarray, ...]  # lower source index per covered position
    hi: tuple[np.ndarray, ...]  # upper source index
    frac: tuple[np.ndarray, ...]  # weight of ``hi`` (0 where the placement is integral)
    integral: bool  # every placement is an integer shift: plain slicing suffices


def _axis_sampling(origins: tuple[int, ...], window: int, map_size: int, out_size: int,
                   scale: float, frame_size: int) -> _AxisSampling:
    starts, stops, los, his, fracs = [], [], [], [], []
    integral = True
    u = np.arange(out_size, dtype=np.float64)
    # Merged-map pixel centres in frame coordinates (+0.5 convention), kept inside the frame so
    # that some tile always covers them (only matters for odd custom scales on tiny frames).
    centres = np.minimum((u + 0.5) / scale, frame_size - 0.5)
    for o in origins:
        covered = np.nonzero((centres >= o) & (centres < o + window))[0]
        a, b = (int(covered[0]), int(covered[-1]) + 1) if covered.size else (0, 0)
        src = (centres[a:b] - o) * (map_size / window) - 0.5
        src = np.clip(src, 0.0, map_size - 1.0)
        lo = np.floor(src).astype(np.intp)
        frac = (src - lo).astype(np.float32)
        hi = np.minimum(lo + 1, map_size - 1)
        if np.any(frac != 0) or (b > a and np.any(np.diff(lo) != 1)):
            integral = False
        starts.append(a)
        stops.append(b)
        los.append(lo)
        his.append(hi)
        fracs.append(frac)
    return _AxisSampling(tuple(starts), tuple(stops), tuple(los), tuple(his), tuple(fracs), integral)


@dataclass(frozen=True)
class TilingPlan:
    """How one frame size is cut into windows. Stateless and hashable: cache it per frame size.

    ``window=None`` means no tiling: the whole frame is one tile (resized by the preprocess).
    """

    height: int
    width: int
    window: int | None = 1024
    overlap: float = 0.1
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"frame size must be positive, got {self.height}x{self.width}")
        if self.window is not None and self.window <= 0:
            raise InputError(f"tiling window must be positive, got {self.window}")
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"tiling overlap must be in [0, 1), got {self.overlap}")

    @property
    def tile_hw(self) -> tuple[int, int]:
        """Height and width of one tile in frame pixels."""
        if self.window is None:
            return self.height, self.width
        return self.window, self.window

    @cached_property
    def step(self) -> int:
        """Distance between tile origins (RoBiS: ``int(window * (1 - overlap))``)."""
        if self.window is None:
            return max(self.height, self.width)
        return max(1, int(self.window * (1 - self.overlap)))

    @cached_property
    def origins_y(self) -> tuple[int, ...]:
        return tile_origins(self.height, self.tile_hw[0], self.step)

    @cached_property
    def origins_x(self) -> tuple[int, ...]:
        return tile_origins(self.width, self.tile_hw[1], self.step)

    @property
    def grid(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return len(self.origins_y), len(self.origins_x)

    @property
    def num_tiles(self) -> int:
        return len(self.origins_y) * len(self.origins_x)

    def tile_boxes(self) -> list[tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) of every tile in frame pixels, row-major; may extend past the frame."""
        th, tw = self.tile_hw
        return [(y, x, y + th, x + tw) for y in self.origins_y for x in self.origins_x]

    def extract(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Cut ``frame`` (H×W or H×W×C) into a (N, th, tw[, C]) stack, zero-padded bottom/right."""
        if frame.shape[:2] != (self.height, self.width):
            raise InputError(f"frame is {frame.shape[1]}x{frame.shape[0]} but the plan is for "
                             f"{self.width}x{self.height}")
        th, tw = self.tile_hw
        shape = (self.num_tiles, th, tw) + frame.shape[2:]
        if out is None:
            out = np.empty(shape, dtype=frame.dtype)
        for i, (y0, x0, y1, x1) in enumerate(self.tile_boxes()):
            part = frame[y0:y1, x0:x1]
            h, w = part.shape[:2]
            out[i, :h, :w] = part
            if h < th:
                out[i, h:] = 0
            if w < tw:
                out[i, :h, w:] = 0
        return out

    def map_scale(self, map_size: int) -> float:
        """Natural scale of the merged map: tile-map pixels per frame pixel (256/1024 = 1/4).
        Untiled frames: map pixels per frame pixel along the longer side."""
        return map_size / max(self.tile_hw)

    def merged_shape(self, scale: float) -> tuple[int, int]:
        """Merged-map size at ``scale`` (floor, as RoBiS' ``int(D / 4)``)."""
        return max(1, int(self.height * scale + 1e-9)), max(1, int(self.width * scale + 1e-9))

    def _sampling(self, map_size: int, scale: float) -> tuple[_AxisSampling, _AxisSampling]:
        key = (map_size, scale)
        hit = self._cache.get(key)
        if hit is None:
            oh, ow = self.merged_shape(scale)
            th, tw = self.tile_hw
            hit = (_axis_sampling(self.origins_y, th, map_size, oh, scale, self.height),
                   _axis_sampling(self.origins_x, tw, map_size, ow, scale, self.width))
            self._cache[key] = hit
        return hit

    def merge(self, tile_maps: np.ndarray, scale: float | None = None) -> np.ndarray:
        """Average per-tile maps (N, M, M) into one float32 map of the frame at ``scale``.

        ``scale`` defaults to the natural scale M / window. Overlaps are averaged with equal
        weights, as RoBiS does.
        """
        maps = np.asarray(tile_maps)
        if maps.ndim == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if maps.ndim != 3 or maps.shape[0] != self.num_tiles or maps.shape[1] != maps.shape[2]:
            raise InputError(f"expected {self.num_tiles} square tile maps (N, M, M), got {maps.shape}")
        m = maps.shape[1]
        scale = self.map_scale(m) if scale is None else float(scale)
        if self.window is None and self.height != self.width:
            # The whole frame was squashed into one square tile (as RoBiS' Resize((S, S)) does):
            # stretch its map back to the frame's aspect ratio.
            oh, ow = self.merged_shape(scale)
            return cv2.resize(maps[0].astype(np.float32), (ow, oh), interpolation=cv2.INTER_LINEAR)
        sy, sx = self._sampling(m, scale)
        out = np.zeros(self.merged_shape(scale), dtype=np.float32)
        count = np.zeros_like(out)
        nx = len(self.origins_x)
        for i in range(self.num_tiles):
            iy, ix = divmod(i, nx)
            ya, yb, xa, xb = sy.starts[iy], sy.stops[iy], sx.starts[ix], sx.stops[ix]
            if yb <= ya or xb <= xa:
                continue
            tile = maps[i].astype(np.float32, copy=False)
            if sy.integral and sx.integral:
                block = tile[sy.lo[iy][0]:sy.lo[iy][-1] + 1, sx.lo[ix][0]:sx.lo[ix][-1] + 1]
            else:
                block = _bilinear_take(tile, sy.lo[iy], sy.hi[iy], sy.frac[iy],
                                       sx.lo[ix], sx.hi[ix], sx.frac[ix])
            out[ya:yb, xa:xb] += block
            count[ya:yb, xa:xb] += 1.0
        out /= count
        return out

    def sample(self, tile_maps: np.ndarray, ys: np.ndarray, xs: np.ndarray,
               scale: float | None = None) -> np.ndarray:
        """Values of ``merge`` at merged-map pixels (ys, xs), for every channel of (N, C, g, g) tile
        maps, without merging whole maps: (len(ys), C) float32, equal to stacking ``merge`` of
        each channel and indexing it (same arithmetic, same order)."""
        maps = np.asarray(tile_maps, dtype=np.float32)
        if maps.ndim != 4 or maps.shape[0] != self.num_tiles or maps.shape[2] != maps.shape[3]:
            raise InputError(f"expected {self.num_tiles} square tile maps (N, C, g, g), got {maps.shape}")
        ys, xs = np.asarray(ys, np.intp), np.asarray(xs, np.intp)
        g, c = maps.shape[2], maps.shape[1]
        scale = self.map_scale(g) if scale is None else float(scale)
        if self.window is None and self.height != self.width:
            return np.stack([self.merge(maps[:, k], scale)[ys, xs] for k in range(c)], axis=1)
        sy, sx = self._sampling(g, scale)
        out = np.zeros((len(ys), c), np.float32)
        count = np.zeros(len(ys), np.float32)
        nx = len(self.origins_x)
        for i in range(self.num_tiles):
            iy, ix = divmod(i, nx)
            ya, yb, xa, xb = sy.starts[iy], sy.stops[iy], sx.starts[ix], sx.stops[ix]
            inside = np.nonzero((ys >= ya) & (ys < yb) & (xs >= xa) & (xs < xb))[0]
            if inside.size == 0:
                continue
            py, px = ys[inside] - ya, xs[inside] - xa
            ylo, yhi, fy = sy.lo[iy][py], sy.hi[iy][py], sy.frac[iy][py]
            xlo, xhi, fx = sx.lo[ix][px], sx.hi[ix][px], sx.frac[ix][px]
            t = maps[i]
            left = t[:, ylo, xlo] + (t[:, yhi, xlo] - t[:, ylo, xlo]) * fy  # rows first, as merge
            right = t[:, ylo, xhi] + (t[:, yhi, xhi] - t[:, ylo, xhi]) * fy
            out[inside] += (left + (right - left) * fx).T
            count[inside] += 1.0
        return out / count[:, None]


def _bilinear_take(tile: np.ndarray, ylo: np.ndarray, yhi: np.ndarray, fy: np.ndarray,
                   xlo: np.ndarray, xhi: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """Separable linear interpolation of ``tile`` at precomputed rows/columns."""
    top = tile[ylo]
    rows = top + (tile[yhi] - top) * fy[:, None]  # a + (b - a)·f: exact where a == b
    left = rows[:, xlo]
    return left + (rows[:, xhi] - left) * fx[None, :]

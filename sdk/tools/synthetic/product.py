"""Synthetic product frames for the INP-Former demo: a machined metal plate with a row pattern of
drilled holes on a dark conveyor, photographed from above, with defects and their masks.

Defects: scratches (thin dark or bright lines), spots (stains, dents: dark or bright blobs) and
missing material (a chip broken out of the plate edge or out of a hole rim, which shows the
background). Each frame's part is shifted and rotated slightly, its lighting and texture vary.
Deterministic for a given seed. Gray uint8 frames, 1600×1200 by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from . import SyntheticFrame

DEFECT_KINDS = ("scratch", "spot", "missing")

# Part geometry in part coordinates (centre of the frame = origin), for a 1600×1200 frame.
_PLATE_HALF = (660.0, 450.0)
_CORNER_R = 70.0
_HOLES = [(x, y) for y in (-250.0, 0.0, 250.0) for x in (-450.0, -150.0, 150.0, 450.0)]
_HOLE_R = 55.0


@dataclass(frozen=True)
class ProductFrame(SyntheticFrame):
    """A :class:`SyntheticFrame` that also says which defects it carries: ``(kind, bbox)`` with
    bbox x0, y0, x1, y1 (exclusive) in frame pixels."""

    defects: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()


def _bbox(shape: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(shape)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _affine(height: int, width: int, dx: float, dy: float, angle_deg: float, scale: float) -> np.ndarray:
    """2×3 matrix from part coordinates to frame pixels."""
    a = math.radians(angle_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    return np.array([[c, -s, width / 2 + dx], [s, c, height / 2 + dy]], np.float64)


def _to_frame(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _plate_mask(height: int, width: int, m: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(plate without holes, holes) masks as 0/255 uint8."""
    hx, hy = _PLATE_HALF
    r = _CORNER_R
    # Rounded rectangle as a polygon (corner arcs sampled), in part coordinates.
    pts = []
    corners = ((hx - r, hy - r, 0), (-hx + r, hy - r, 90), (-hx + r, -hy + r, 180), (hx - r, -hy + r, 270))
    for cx, cy, a0 in corners:
        for t in np.linspace(a0, a0 + 90, 16):
            pts.append((cx + r * math.cos(math.radians(t)), cy + r * math.sin(math.radians(t))))
    poly = _to_frame(m, np.array(pts))
    plate = np.zeros((height, width), np.uint8)
    cv2.fillPoly(plate, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    holes = np.zeros_like(plate)
    for c in _to_frame(m, np.array(_HOLES)):
        cv2.circle(holes, (int(round(c[0] * 16)), int(round(c[1] * 16))), int(round(_HOLE_R * scale * 16)),
                   255, -1, cv2.LINE_8, shift=4)
    return cv2.bitwise_and(plate, cv2.bitwise_not(holes)), holes


def _render(rng: np.random.Generator, solid: np.ndarray, height: int, width: int,
            level_range: tuple[float, float] = (150, 170), grain_amp: float = 6.0) -> np.ndarray:
    """Float32 picture of the plate (``solid`` = 0/255 material mask) on the dark background."""
    # Background: dark conveyor with fine noise.
    bg = 38 + 3 * cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.0) \
        * 2.0
    # Brushed metal: slow shading + horizontal grain.
    shade = cv2.GaussianBlur(rng.normal(0, 1, (height // 16 + 1, width // 16 + 1)).astype(np.float32),
                             (0, 0), 2.0)
    shade = cv2.resize(shade, (width, height), interpolation=cv2.INTER_CUBIC)
    shade /= np.abs(shade).max() + 1e-6
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 4.0, 0.6)
    grain /= grain.std() + 1e-6
    level = rng.uniform(*level_range)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = float(rng.uniform(-8, 8)) * (xx / width - 0.5) + float(rng.uniform(-8, 8)) * (yy / height - 0.5)
    metal = level + 8 * shade + grain_amp * grain + light
    # Soft material edge with a thin bright chamfer highlight and a dark shadow outside.
    sol = solid.astype(np.float32) / 255.0
    soft = cv2.GaussianBlur(sol, (0, 0), 1.0)
    edge = cv2.morphologyEx(solid, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(np.float32) / 255
    edge = cv2.GaussianBlur(edge, (0, 0), 1.5)
    shadow = cv2.GaussianBlur(sol, (0, 0), 6.0) * (1 - soft)
    img = bg * (1 - soft) + metal * soft + 35 * edge * soft - 15 * shadow
    return img


def _inside_material(rng: np.random.Generator, solid: np.ndarray, margin: int) -> tuple[int, int]:
    """A random point at least ``margin`` px inside the material."""
    inner = cv2.erode(solid, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1)))
    ys, xs = np.nonzero(inner)
    if not len(xs):  # tiny frames: any material pixel
        ys, xs = np.nonzero(solid)
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


def _scratch_or_spot(rng: np.random.Generator, kind: str, solid: np.ndarray) -> tuple[np.ndarray, float]:
    """Defect shape (0/255) restricted to material and its intensity change."""
    shape = np.zeros_like(solid)
    if kind == "scratch":
        cx, cy = _inside_material(rng, solid, 40)
        length, angle = rng.uniform(80, 260), rng.uniform(0, math.pi)
        dx, dy = length / 2 * math.cos(angle), length / 2 * math.sin(angle)
        bend = rng.uniform(-15, 15)
        pts = np.array([(cx - dx, cy - dy), (cx - bend * math.sin(angle), cy + bend * math.cos(angle)),
                        (cx + dx, cy + dy)])
        cv2.polylines(shape, [np.round(pts).astype(np.int32)], False, 255, int(rng.integers(3, 7)))
        delta = -rng.uniform(55, 80) if rng.random() < 0.75 else rng.uniform(45, 70)
    else:
        cx, cy = _inside_material(rng, solid, 40)
        axes = (int(rng.integers(10, 30)), int(rng.integers(10, 30)))
        cv2.ellipse(shape, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        delta = -rng.uniform(55, 85) if rng.random() < 0.6 else rng.uniform(45, 70)
    return cv2.bitwise_and(shape, solid), float(delta)


def _ragged_blob(rng: np.random.Generator, solid: np.ndarray, cx: float, cy: float, r: float, n: int,
                 inner: float) -> np.ndarray:
    """An irregular polygon of ``n`` vertices at random angles, radii ``inner``·r..r around (cx, cy),
    restricted to the material (0/255)."""
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = r * rng.uniform(inner, 1.0, n)
    poly = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    blob = np.zeros_like(solid)
    cv2.fillPoly(blob, [np.round(poly).astype(np.int32)], 255)
    return cv2.bitwise_and(blob, solid)


def _chip(rng: np.random.Generator, solid: np.ndarray, m: np.ndarray, scale: float) -> np.ndarray:
    """Missing material: an irregular bite out of the plate edge or a hole rim (0/255, ⊂ solid)."""
    if rng.random() < 0.6:  # plate edge: a point on the outline
        hx, hy = _PLATE_HALF
        side = int(rng.integers(4))
        t = rng.uniform(-0.8, 0.8)
        p = [(hx, t * hy), (-hx, t * hy), (t * hx, hy), (t * hx, -hy)][side]
    else:  # hole rim
        hx0, hy0 = _HOLES[int(rng.integers(len(_HOLES)))]
        a = rng.uniform(0, 2 * math.pi)
        p = (hx0 + _HOLE_R * math.cos(a), hy0 + _HOLE_R * math.sin(a))
    cx, cy = _to_frame(m, np.array([p]))[0]
    return _ragged_blob(rng, solid, cx, cy, rng.uniform(30, 70) * scale, 9, 0.6)


def _tear(rng: np.random.Generator, solid: np.ndarray, scale: float) -> np.ndarray:
    """Missing material inside a sheet: an irregular hole punched or torn through it (0/255)."""
    cx, cy = _inside_material(rng, solid, int(80 * scale))
    return _ragged_blob(rng, solid, cx, cy, rng.uniform(18, 50) * scale, 11, 0.55)


STYLES = ("sheet", "plate")


def make_product_frame(rng: np.random.Generator, height: int = 1200, width: int = 1600,
                       defects: int = 0, kinds: tuple[str, ...] = DEFECT_KINDS,
                       name: str = "frame", style: str = "sheet") -> ProductFrame:
    """One frame with ``defects`` defects of the given kinds (0 = a good part).

    ``style="sheet"``: a brushed metal sheet filling the frame (missing material = holes through
    it); ``"plate"``: a rounded plate with 3×4 drilled holes on a dark conveyor, slightly shifted
    and rotated per frame (missing material = chips out of the edge or a hole rim)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    scale = min(height / 1200.0, width / 1600.0)
    m = _affine(height, width, rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-0.6, 0.6), scale)
    if style == "plate":
        solid = _plate_mask(height, width, m, scale)[0]
    else:
        solid = np.full((height, width), 255, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    changes: list[tuple[str, np.ndarray, float]] = []
    found: list[tuple[str, tuple[int, int, int, int]]] = []
    for _ in range(defects):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "missing":
            bite = _chip(rng, solid, m, scale) if style == "plate" else _tear(rng, solid, scale)
            solid = cv2.bitwise_and(solid, cv2.bitwise_not(bite))
            mask |= bite
            if (box := _bbox(bite)) is not None:
                found.append((kind, box))
        else:
            changes.append((kind, *_scratch_or_spot(rng, kind, solid)))
    img = _render(rng, solid, height, width)
    for kind, shape, delta in changes:
        shape = cv2.bitwise_and(shape, solid)  # a later chip may have removed the material
        if (box := _bbox(shape)) is None:
            continue
        soft = cv2.GaussianBlur(shape.astype(np.float32) / 255.0, (0, 0), 1.2)
        img += delta * soft
        mask |= shape
        found.append((kind, box))
    return ProductFrame(name, np.clip(img, 0, 255).astype(np.uint8), mask, tuple(found))


def make_product_frames(count: int, height: int = 1200, width: int = 1600, defect_rate: float = 0.5,
                        seed: int = 0, kinds: tuple[str, ...] = DEFECT_KINDS,
                        prefix: str = "part", style: str = "sheet") -> list[ProductFrame]:
    """``count`` frames; about ``defect_rate`` of them carry 1–3 defects."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        n = int(rng.integers(1, 4)) if rng.random() < defect_rate else 0
        frames.append(make_product_frame(rng, height, width, n, kinds, f"{prefix}_{i:03d}", style))
    return frames

"""Synthetic industrial surfaces with defects and their ground truth, for the demo, self-tests
and the camera simulator. Deterministic for a given seed."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sdk.vocabulary import SCENES as VOCABULARY_SCENES


@dataclass(frozen=True)
class SyntheticFrame:
    """A gray uint8 frame, its 0/255 defect mask and a name."""

    name: str
    image: np.ndarray
    mask: np.ndarray

    @property
    def defective(self) -> bool:
        return bool(self.mask.any())


def surface(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A brushed-metal-like gray surface: slow shading plus fine anisotropic texture."""
    shade = cv2.GaussianBlur(rng.normal(0, 1, (height // 8 + 1, width // 8 + 1)).astype(np.float32),
                             (0, 0), 3)
    shade = cv2.resize(shade, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 0.6, 2.5)
    img = 128 + 10 * shade / (np.abs(shade).max() + 1e-6) + 9 * grain / (grain.std() + 1e-6)
    return np.clip(img, 0, 255).astype(np.uint8)


def add_defect(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Paint one defect (dark blob, bright spot or scratch) into ``image`` and ``mask`` in place."""
    h, w = image.shape
    kind = rng.choice(["blob", "spot", "scratch"])
    shape = np.zeros_like(mask)
    cx, cy = int(rng.integers(w // 10, w - w // 10)), int(rng.integers(h // 10, h - h // 10))
    if kind == "scratch":
        length, angle = rng.uniform(80, 260), rng.uniform(0, np.pi)
        dx, dy = int(length / 2 * np.cos(angle)), int(length / 2 * np.sin(angle))
        cv2.line(shape, (cx - dx, cy - dy), (cx + dx, cy + dy), 255, int(rng.integers(3, 7)))
        delta = -rng.uniform(45, 70)
    else:
        axes = (int(rng.integers(8, 30)), int(rng.integers(8, 30)))
        cv2.ellipse(shape, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        delta = -rng.uniform(45, 75) if kind == "blob" else rng.uniform(45, 70)
    soft = cv2.GaussianBlur(shape.astype(np.float32) / 255.0, (0, 0), 1.5)
    image[:] = np.clip(image.astype(np.float32) + delta * soft, 0, 255).astype(np.uint8)
    mask |= shape


def make_frames(count: int, height: int = 972, width: int = 1432, defect_rate: float = 0.5,
                seed: int = 0) -> list[SyntheticFrame]:
    """``count`` frames; about ``defect_rate`` of them carry 1–3 defects."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        img = surface(rng, height, width)
        mask = np.zeros((height, width), np.uint8)
        if rng.random() < defect_rate:
            for _ in range(int(rng.integers(1, 4))):
                add_defect(rng, img, mask)
        frames.append(SyntheticFrame(f"frame_{i:03d}", img, mask))
    return frames


# Synthetic scenes by name: "surface" = make_frames above (the classical demo bundle,
# examples/demo-bundle); "sheet" = sdk.tools.synthetic.product's brushed metal sheet (the INP-Former demo
# bundle, examples/demo/bundle, made for 1892×1432 frames).
SCENES = VOCABULARY_SCENES


def make_scene_frames(scene: str, count: int, height: int, width: int, defect_rate: float = 0.5,
                      seed: int = 0) -> list[SyntheticFrame]:
    """``count`` frames of the named scene (see ``SCENES``), each with its defect mask."""
    if scene == "surface":
        return make_frames(count, height, width, defect_rate, seed)
    if scene == "sheet":
        from .product import make_product_frames  # it builds on this module

        return make_product_frames(count, height, width, defect_rate, seed, prefix="sheet", style="sheet")
    raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")

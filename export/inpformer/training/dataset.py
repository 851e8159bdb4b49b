"""Training tiles: the Swin-Cropping tiles of defect-free frames, through the SDK's own
preprocessing (frame preparation, tiling with zero padding, Pillow-exact resize, normalisation)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sdk.bundle import PreprocessSpec
from sdk.geometry import TilingPlan
from sdk.preprocess import prepare_frame, tile_preprocessor

from .augment import random_exposure


def _as_frames(frames: Iterable[Any]) -> Iterable[tuple[np.ndarray, str | None]]:
    for f in frames:
        if isinstance(f, tuple):
            yield f[0], f[1]
        else:
            yield f, None


class TileSet:
    """Training tiles of a set of frames, already resized to S (uint8, gray or RGB).

    Each frame goes through the SDK's inference path up to the resize: ``prepare_frame`` (gray
    stays gray, uint16 ``>> 8``, BGR → RGB), ``TilingPlan(h, w, window, overlap).extract`` (zero
    padding), the tile size's ``TilePreprocessor.resize`` (a gray tile is resized once). ``batch``
    then augments and normalises with the S×S preprocessor's tables.
    """

    def __init__(self, frames: Iterable[Any], size: int, window: int | None = 1024, overlap: float = 0.1,
                 spec: PreprocessSpec | None = None) -> None:
        self.size, self.window, self.overlap = int(size), window, float(overlap)
        self.spec = spec or PreprocessSpec(size=self.size)
        if self.spec.size != self.size:
            raise ValueError("spec.size must equal size")
        self._normalise = tile_preprocessor(self.spec, (self.size, self.size))
        self.tiles: list[np.ndarray] = []
        self.n_frames = 0
        for frame, color in _as_frames(frames):
            img = prepare_frame(frame, color)
            plan = TilingPlan(img.shape[0], img.shape[1], window, overlap)
            tiles = tile_preprocessor(self.spec, plan.tile_hw).resize(plan.extract(img))
            self.tiles.extend(np.ascontiguousarray(t) for t in tiles)
            self.n_frames += 1

    def __len__(self) -> int:
        return len(self.tiles)

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None = None,
              aug_p: float = 0.5) -> tuple[np.ndarray, int]:
        """Model input (N, 3, S, S) float32 for ``indices``; with ``rng`` each sample is augmented
        with probability ``aug_p``. Returns the batch and the number of augmented samples."""
        rgb = np.empty((len(indices), self.size, self.size, 3), np.uint8)
        n_aug = 0
        for j, i in enumerate(indices):
            t = self.tiles[int(i)]
            rgb[j] = t[..., None] if t.ndim == 2 else t
            if rng is not None:
                rgb[j], aug = random_exposure(rgb[j], rng, p=aug_p)
                n_aug += aug
        return self._normalise(rgb), n_aug

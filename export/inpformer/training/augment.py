"""RoBiS' training augmentation: exposure change plus Gaussian noise, on half of the samples."""

from __future__ import annotations

import numpy as np


def adjust_exposure(tile: np.ndarray, lam: float, noise: np.ndarray) -> np.ndarray:
    """RoBiS ``adjust_exposure``: float32 ``tile · 2^lam``, clip to [0, 255], ``+ noise``, clip,
    uint8 truncation. ``tile`` (S, S, 3) uint8; ``noise`` of the same shape (float64)."""
    img = tile.astype(np.float32) * (2.0**lam)
    img = np.clip(img, 0, 255)
    img = img + noise
    img = np.clip(img, 0, 255)
    return img.astype(np.uint8)


def random_exposure(tile: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                    lam_range: float = 0.2, noise_std: float = 15.0) -> tuple[np.ndarray, bool]:
    """With probability ``p``: ``adjust_exposure`` with λ~U(−0.2, 0.2) and N(0, 15) noise per pixel
    and channel. Returns the tile and whether it was augmented."""
    if rng.random() >= p:
        return tile, False
    lam = rng.uniform(-lam_range, lam_range)
    return adjust_exposure(tile, lam, rng.normal(0.0, noise_std, tile.shape)), True

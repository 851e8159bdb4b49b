"""Optional mask clean-up (hybrid INP-Former/CPR framework): closing and hole filling."""

from __future__ import annotations

import cv2
import numpy as np


def close_mask(mask: np.ndarray, kernel: int) -> np.ndarray:
    """Morphological closing with an elliptical ``kernel``×``kernel`` element (0/1: no-op)."""
    if kernel <= 1:
        return mask
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, element)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background areas (4-connected) that do not touch the mask border."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 255, flags=4)
    holes = flood[1:-1, 1:-1] == 0
    out = mask.copy()
    out[holes] = 255
    return out


def apply_morphology(mask: np.ndarray, closing: int, holes: bool) -> np.ndarray:
    """Closing then hole filling, each only when enabled."""
    out = close_mask(mask, closing)
    return fill_holes(out) if holes else out
